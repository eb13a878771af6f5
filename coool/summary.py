"""What a run's summaries say (the Prefect artifacts and the ``coool run`` terminal output):
the models each role ran (name and revision), and per stage what it did and the tokens it cost.

Plain data in, markdown or text out; no Prefect in it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from coool.llm import Usage

if TYPE_CHECKING:
    from coool.run import Run
    from coool.schedule import StageReport


def role_models(run: Run) -> list[dict[str, Any]]:
    """Each role the recipe's plan uses: its model, pinned revision (None: the hub's main) and cache-key identity."""
    roles = list(dict.fromkeys(s.role for s in run.recipe.stages() if s.role))
    out = []
    for role in roles:
        settings = run.settings.role(role)
        stages = [s.name for s in run.recipe.stages() if s.role == role]
        out.append(
            {"role": role, "model": settings.model, "revision": settings.revision, "identity": settings.identity,
             "stages": stages}
        )
    return out


def revision_text(revision: str | None) -> str:
    return revision or "not pinned (the hub's main branch)"


def tokens_text(usage: Usage | Mapping[str, Any] | None) -> str:
    """``prompt 1,200 (cached 300), completion 450`` (cached only when the server reported it)."""
    u = usage if isinstance(usage, Usage) else Usage.from_dict(dict(usage or {}))
    cached = f" (cached {u.cached_prompt_tokens:,})" if u.cached_prompt_tokens is not None else ""
    text = f"prompt {u.prompt_tokens:,}{cached}, completion {u.completion_tokens:,}"
    if u.unreported:
        text += f"; {u.unreported} response(s) without usage"
    return text


def total_tokens(reports: Sequence[Mapping[str, Any]]) -> Usage:
    """The run's tokens: the sum of its stages' (``StageReport.as_dict`` items)."""
    total = Usage()
    for r in reports:
        total.add(r.get("tokens") or {})
    return total


def skipped_text(report: Mapping[str, Any]) -> str:
    return f"{report['skipped']}" + "".join(f" ({why}: {n})" for why, n in (report.get("skipped_why") or {}).items())


def roles_markdown(roles: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["## Models", "", "| role | model | revision | cache-key identity | stages |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['role']} | `{r['model']}` | {revision_text(r['revision'])} | `{r['identity']}` | {', '.join(r['stages'])} |"
        for r in roles
    ]
    return lines


def run_summary_markdown(
    run: Run, videos: Sequence[int], reports: Sequence[Mapping[str, Any]], seconds: float
) -> str:
    """The run-summary artifact: models, every stage (stage 1 included) with its tokens, failures."""
    total = total_tokens(reports)
    lines = [
        f"# coool run: recipe `{run.recipe.name}`",
        "",
        f"{len(videos)} videos, {len(run.failures)} failure(s), {seconds:.1f} s. Submission: `{run.ws.submission_csv}`",
        "",
        f"**Tokens** (this run): {tokens_text(total)}",
        "",
        *roles_markdown(role_models(run)),
        "",
        "## Stages",
        "",
        "| stage | done | from cache | skipped | failed | requests | retried | re-asked videos | fell-back videos "
        "| prompt tokens | cached prompt tokens | completion tokens | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        requests = r.get("requests", {})
        tokens = Usage.from_dict(r.get("tokens"))
        cached = "" if tokens.cached_prompt_tokens is None else f"{tokens.cached_prompt_tokens:,}"
        lines.append(
            f"| {r['stage']} | {r['done']} | {r['cached']} | {skipped_text(r)} | {len(r['failed'])} | "
            f"{requests.get('requests', '')} | {requests.get('retries', '')} | {len(r.get('reasked', {}))} | "
            f"{len(r.get('fallbacks', {}))} | {tokens.prompt_tokens:,} | {cached} | {tokens.completion_tokens:,} | "
            f"{r['seconds']} |"
        )
    if run.failures:
        lines += ["", "## Failures (fallback rows)", "", "| video | stage | error |", "|---|---|---|"]
        lines += [f"| {f.video} | {f.stage} | {f.error.replace('|', '/')[:300]} |" for f in run.failures]
    return "\n".join(lines)


def units_markdown(report: StageReport, task_name: Any = None) -> list[str]:
    """One row per video (the per-task view, written once per stage instead of once per task run):
    task run name, how it ended, cache key, responses, re-asks, fallbacks, tokens."""
    if not report.units:
        return []
    lines = [
        "## Videos (one row per task run)",
        "",
        "| video | task run | status | cache key | responses | re-asks | fallbacks | prompt tokens | cached | completion tokens |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for video, unit in sorted(report.units.items()):
        usage = Usage.from_dict(unit.get("usage"))
        status = unit["status"] + (f": {unit['why']}" if unit.get("why") else "")
        notes = "; ".join(report.fallbacks.get(video, [])).replace("|", "/")[:200]
        name = task_name(video) if task_name else ""
        has_usage = bool(unit.get("usage"))
        lines.append(
            f"| {video} | {name} | {status} | `{unit.get('key') or '-'}` | {usage.responses if has_usage else ''} | "
            f"{report.reasked.get(video, 0)} | {notes} | {usage.prompt_tokens if has_usage else ''} | "
            f"{'' if usage.cached_prompt_tokens is None else usage.cached_prompt_tokens} | "
            f"{usage.completion_tokens if has_usage else ''} |"
        )
    return lines


def unit_start_text(stage: Any, video: int, identity: str, key: str | None) -> str:
    """What a (stage, video) task run is, for its own page (its first log line)."""
    config = f", configuration {stage.config}" if stage.config else ""
    return f"{stage.name} for video {video}{config}: role {stage.role}, model {identity}, cache key {key or 'none'}"


def unit_end_text(outcome: Mapping[str, Any]) -> str:
    """What a (stage, video) task run did, for its own page (its last log line)."""
    if outcome.get("skipped"):
        return f"skipped: {outcome['skipped']}"
    if outcome.get("cached"):
        return "output already on disk with this key: reused, no request sent"
    usage = outcome.get("usage") or {}
    notes = "; ".join(str(n) for n in outcome.get("notes") or []) or "none"
    return (
        f"done: {usage.get('responses', 0)} response(s), {outcome.get('reasks') or 0} re-ask(s), "
        f"fallbacks: {notes}; tokens: {tokens_text(usage)}"
    )
