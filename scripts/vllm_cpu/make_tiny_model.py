"""Build a tiny random-weight chat model that real vLLM (CPU) can serve.

Nothing is downloaded: the tokenizer is a byte-level BPE trained here on
text this script generates (English words, digits, JSON), saved as a
transformers fast tokenizer with a ChatML template; the weights are drawn
from a seeded generator, float32. Three kinds (``--kind``):

- ``text``: ``Qwen2ForCausalLM`` (2 layers, hidden 128, 2 heads of 64, one
  KV head: the CPU attention backend takes head sizes 32, 64, 80, 96, 112,
  128...): the detector and ensembler roles;
- ``qwen2vl``: ``Qwen2VLForConditionalGeneration``, a 2-block vision tower
  (patch 14, merge 2, heads of 64) on the same tiny text model, images
  resized to at most 224 x 224: the image roles (captioner, describer).
  Its processor needs torchvision (transformers 5 builds no Qwen2-VL
  processor without a video processor): setup.sh's ops-less one does;
- ``llava``: ``LlavaForConditionalGeneration``, a 2-layer CLIP tower at
  112 x 112 (65 tokens an image) on the same text model; vLLM's LLaVA
  module imports torchvision as well.

The weights are random except for one deliberate lean. Random logits are
flat, so under a JSON schema a string or an integer would run until
``max_tokens`` (a cut-off, unparseable answer) far more often than it ends.
So every token embedding carries a constant channel (dimension 0), the
final norm turns it into a constant ~1, and ``lm_head`` reads it as a
per-token bias: ``+closer_bias`` for the tokens that end things (``"`` and
the end-of-turn token; ``}`` and ``,`` get 0.7 of it, as they are legal
inside strings), ``-4 * closer_bias`` for those a stage
never wants to see (non-ASCII bytes, control characters, bare whitespace,
special tokens other than end-of-turn). A second channel, on for tokens
that end with ``"``, turns the closers down right after a quote, so that
strings are not empty. The answers stay random, short, non-empty and ASCII. ``--closer-bias 0`` gives a plainly random model;
``--thinks`` also leans towards ``</think>`` (for a reasoning parser).

Usage (the vLLM venv has torch, transformers and tokenizers)::

    envs/cpu/bin/python scripts/vllm_cpu/make_tiny_model.py /tmp/tiny-text
    envs/cpu/bin/python scripts/vllm_cpu/make_tiny_model.py /tmp/tiny-vl --kind qwen2vl

Deterministic: the same seed and versions give the same weights and files.
Takes a few seconds. Prints a JSON summary (also saved as tiny_model.json).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
LLAVA_IMAGE = "<image>"
LLAVA_IMAGE_SIZE = 112  # 8 x 8 patches of 14 px: 64 patch tokens + the class token per image
# Qwen2-VL's ids for these come from the config; the order here fixes them.
SPECIAL_TOKENS = [END_OF_TEXT, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD, LLAVA_IMAGE]
THINK_TOKENS = ["<think>", "</think>"]  # ordinary added tokens, like Qwen3's
AVOID_FACTOR = 4.0  # avoided tokens get -AVOID_FACTOR * closer_bias
CLOSER_SHARE = 0.7  # "}" and "," get this share of closer_bias ('"' and end-of-turn all of it)
THINK_SHARE = 1.5  # --thinks: "</think>" gets this share

# ChatML, as the Qwen models use it. Content may be a string or a list of
# OpenAI parts (text / image); an image part becomes the model's image
# placeholder, which vLLM expands to the image's tokens. chat_template_kwargs:
# enable_thinking=false adds an empty think block (as Qwen3's template does),
# which makes the kwarg visible in the prompt's token count.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}"
    "{{- part['text'] -}}"
    "{%- elif part['type'] in ('image', 'image_url') -%}"
    "{{- '@IMAGE@' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- endif -%}"
    "{%- endif -%}"
)
IMAGE_PLACEHOLDERS = {
    "text": "<|vision_start|><|image_pad|><|vision_end|>",
    "qwen2vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "llava": LLAVA_IMAGE,
}


def chat_template(kind: str) -> str:
    return CHAT_TEMPLATE.replace("@IMAGE@", IMAGE_PLACEHOLDERS[kind])


WORDS = """
the a an and or but of to in on at by for with from into onto over under near behind ahead
ego car ego-car truck bus van motorcycle scooter bicycle cyclist pedestrian person people
animal dog deer cat goose geese cow horse road street lane lanes crosswalk intersection
junction highway ramp shoulder curb sidewalk barrier guardrail pole tree wall sign signal
traffic light red green yellow oncoming parked stopped moving turning merging crossing
overtakes overtaking brakes braking swerves swerving hits hit collides collided collision
crash crashes accident hazard debris object flying flipped over loses control skids slides
rain snow night day dark bright wet dry city rural urban suburban tunnel bridge parking lot
left right front rear side center middle suddenly slowly quickly fast slow steady ahead
is are was were be being been has have had does do did not no none unknown clear scene
frame frames caption reason before after start window detection severity label count
number vehicles pedestrians animals bicyclists scooters involved incident describe answer
json object string integer true false null value key field frame video image table row
driver gaze heatmap focus looks watches sees enters exits approaches passes follows
""".split()  # noqa: SIM905

KEYS = [
    "frame",
    "caption_before",
    "reason",
    "incident_start_frame",
    "Scene_Description",
    "Hazard_Clues",
    "Gaze_Focus",
    "Incident window start frame",
    "Incident Detection",
    "Crash Severity",
    "Ego-car involved",
    "Label",
    "Number of Bicyclists/Scooters",
    "Number of animals involved",
    "Number of pedestrians involved",
    "Number of vehicles involved (excluding ego-car)",
    "Caption Before Incident",
    "Reason of Incident",
]


def build_corpus(rng: random.Random, lines: int = 6000) -> list[str]:
    """English-ish sentences, numbers and JSON objects: what answers are made of."""

    def sentence() -> str:
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 16))]
        words[0] = words[0].capitalize()
        return " ".join(words) + rng.choice([".", ".", ".", "!", "?", ";", ":"])

    def number() -> str:
        return str(rng.choice([rng.randint(-1, 9), rng.randint(10, 99), rng.randint(100, 9999)]))

    def value() -> object:
        kind = rng.random()
        if kind < 0.4:
            return int(number())
        if kind < 0.8:
            return sentence()
        return rng.choice([True, False, None, 0.5, [1, 2, 3]])

    out: list[str] = []
    for i in range(lines):
        kind = i % 4
        if kind == 0:
            out.append(sentence())
        elif kind == 1:
            obj = {rng.choice(KEYS): value() for _ in range(rng.randint(1, 5))}
            out.append(json.dumps(obj, indent=rng.choice([None, 2])))
        elif kind == 2:
            out.append(" | ".join(number() for _ in range(rng.randint(2, 10))))
        else:
            out.append("```json\n" + json.dumps({"frame": int(number())}) + "\n```")
    return out


def train_tokenizer(corpus: list[str], vocab_size: int):
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_tokens(THINK_TOKENS)
    return tok


def save_tokenizer(tok, out: Path, kind: str):
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=END_OF_TEXT,
        unk_token=None,
        bos_token=None,
        model_max_length=32768,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in (IM_END, END_OF_TEXT)],
        clean_up_tokenization_spaces=False,
    )
    hf.chat_template = chat_template(kind)
    hf.save_pretrained(out)
    return hf


def token_leans(hf, thinks: bool = False) -> tuple[dict[int, float], list[int]]:
    """Tokens to favour (id: share of the bias) and to avoid (see the module docstring).

    ``"`` and end-of-turn get the whole bias, ``}`` and ``,`` less: they
    are legal inside a string too, and at a near-greedy temperature (stage
    2's 0.01) a string would otherwise fill up with them instead of closing.
    With ``thinks``, ``</think>`` leads them all: the model "reasons" for a few
    tokens, then closes the think block, as a reasoning model does.
    """
    favour: dict[int, float] = {}
    avoid: list[int] = []
    specials = set(hf.all_special_ids) | {hf.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS + THINK_TOKENS}
    eos = hf.convert_tokens_to_ids(IM_END)
    think_end = hf.convert_tokens_to_ids("</think>")
    for token_id in range(len(hf)):
        if token_id == eos:
            favour[token_id] = 1.0
            continue
        if thinks and token_id == think_end:
            favour[token_id] = THINK_SHARE
            continue
        if token_id in specials:
            avoid.append(token_id)
            continue
        text = hf.decode([token_id])
        if text == '"':
            favour[token_id] = 1.0
        elif text in ("}", ","):
            favour[token_id] = CLOSER_SHARE
        elif not text or not text.isascii() or not text.isprintable() or not text.strip() or "\ufffd" in text:
            avoid.append(token_id)
        elif text.strip().isdigit() and len(text.strip()) > 1:
            # One digit a token: an integer then meets a closer after each digit.
            avoid.append(token_id)
    return favour, avoid


def text_config_kwargs(vocab_size: int, hf) -> dict:
    return dict(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,  # head size 64: one the CPU attention backend supports
        num_key_value_heads=1,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        bos_token_id=hf.convert_tokens_to_ids(END_OF_TEXT),
        eos_token_id=hf.convert_tokens_to_ids(IM_END),
        pad_token_id=hf.convert_tokens_to_ids(END_OF_TEXT),
    )


def quote_enders(hf) -> list[int]:
    """Tokens that end with a double quote: after one, a string may just have opened."""
    return [i for i in range(len(hf)) if hf.decode([i]).endswith('"')]


def lean(model, favour: dict[int, float], avoid: list[int], bias: float, after_quote: list[int]) -> None:
    """Write the two constant channels and the per-token biases into the weights.

    Channel 0 is 1 for every token: lm_head's column 0 reads it as a bias.
    Channel 1 is 1 for the tokens in ``after_quote``: the input token of the
    next step, so column 1 pushes the closers down right after a quote. A
    string then gets at least one token before it may close (non-empty
    texts: stage 4 asks again for an empty field, stage 5 for an empty text).
    """
    import torch

    lm = model.get_output_embeddings().weight
    emb = model.get_input_embeddings().weight
    norm = model.get_decoder().norm.weight if hasattr(model.get_decoder(), "norm") else None
    with torch.no_grad():
        emb[:, 0] = 1.0  # dominates the rms of a row of std 0.02 over 128 dims
        emb[:, 1] = 0.0
        lm[:, 0] = 0.0
        lm[:, 1] = 0.0
        if bias:
            emb[after_quote, 1] = 1.0
            # After the final RMSNorm the channels are ~sqrt(hidden) / sqrt(number
            # on); scale the norm so that they read ~1 (~0.7 when both are on).
            hidden = emb.shape[1]
            if norm is not None:
                norm[0] = norm[1] = 1.0 / hidden**0.5
            for token_id, share in favour.items():
                lm[token_id, 0] = bias * share
                if share < THINK_SHARE:
                    lm[token_id, 1] = -2.0 * bias
            # Avoided tokens are pushed far down: a non-ASCII byte now and
            # then would make stage 5 ask again.
            lm[avoid, 0] = -AVOID_FACTOR * bias


def calibrate(model, hf) -> float:
    """Rescale lm_head's bias columns so that the biases are what was asked.

    Channel 0 comes out of the final norm near, not at, 1 (the layers add to
    the residual stream): measure it on a prompt and divide it out.
    """
    import torch

    ids = hf.apply_chat_template([{"role": "user", "content": "Answer in JSON, please."}], add_generation_prompt=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    with torch.no_grad():
        out = model(input_ids=torch.tensor([list(ids)]), output_hidden_states=True)
        level = float(out.hidden_states[-1][0, :, 0].mean())
        lm = model.get_output_embeddings().weight
        lm[:, :2] /= level
    return level


def measure_lean(model, hf, favour: dict[int, float]) -> float:
    """Mean probability mass of the favoured tokens at temperature 1 on a prompt."""
    import torch

    ids = hf.apply_chat_template([{"role": "user", "content": "Answer in JSON."}], add_generation_prompt=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([list(ids)])).logits[0]
    probs = torch.softmax(logits.float(), dim=-1)
    return float(probs[:, list(favour)].sum(dim=-1).mean())


def build(out: Path, kind: str, seed: int, vocab: int, bias: float, thinks: bool = False) -> dict:
    import torch
    import transformers

    started = time.perf_counter()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    tok = train_tokenizer(build_corpus(rng), vocab)
    hf = save_tokenizer(tok, out, kind)
    vocab_size = -(-len(hf) // 64) * 64  # the model's rows: the tokenizer's, padded to 64
    text_kwargs = text_config_kwargs(vocab_size, hf)

    if kind == "text":
        config = transformers.Qwen2Config(**text_kwargs, dtype="float32")
        config.architectures = ["Qwen2ForCausalLM"]
        model = transformers.Qwen2ForCausalLM(config)
    elif kind == "llava":
        config = transformers.LlavaConfig(
            text_config=dict(text_kwargs, model_type="qwen2", architectures=["Qwen2ForCausalLM"]),
            vision_config=dict(
                model_type="clip_vision_model",
                hidden_size=128,
                intermediate_size=256,
                projection_dim=128,
                num_hidden_layers=2,
                num_attention_heads=2,  # vision head size 64
                image_size=LLAVA_IMAGE_SIZE,
                patch_size=14,
            ),
            image_token_index=hf.convert_tokens_to_ids(LLAVA_IMAGE),
            image_seq_length=(LLAVA_IMAGE_SIZE // 14) ** 2,
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
            projector_hidden_act="gelu",
            tie_word_embeddings=False,
            dtype="float32",
        )
        config.architectures = ["LlavaForConditionalGeneration"]
        model = transformers.LlavaForConditionalGeneration(config)
    else:  # qwen2vl
        text_kwargs["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": 1000000.0,
            "mrope_section": [8, 12, 12],  # sums to head size / 2 = 32
        }
        config = transformers.Qwen2VLConfig(
            text_config=text_kwargs,
            vision_config=dict(
                depth=2,
                embed_dim=128,
                num_heads=2,  # vision head size 64
                mlp_ratio=2,
                hidden_size=128,  # the merger's output: the text hidden size
                in_channels=3,
                patch_size=14,
                spatial_merge_size=2,
                temporal_patch_size=2,
            ),
            image_token_id=hf.convert_tokens_to_ids(IMAGE_PAD),
            video_token_id=hf.convert_tokens_to_ids(VIDEO_PAD),
            vision_start_token_id=hf.convert_tokens_to_ids(VISION_START),
            vision_end_token_id=hf.convert_tokens_to_ids(VISION_END),
            tie_word_embeddings=False,
            dtype="float32",
        )
        config.architectures = ["Qwen2VLForConditionalGeneration"]
        model = transformers.Qwen2VLForConditionalGeneration(config)
    model = model.to(torch.float32).eval()

    favour, avoid = token_leans(hf, thinks)
    lean(model, favour, avoid, bias, quote_enders(hf))
    level = calibrate(model, hf) if bias else 1.0
    favoured_mass = measure_lean(model, hf, favour)
    model.save_pretrained(out)
    if kind == "llava":
        nest_clip_weights(out)

    gen = transformers.GenerationConfig(
        eos_token_id=[hf.convert_tokens_to_ids(IM_END), hf.convert_tokens_to_ids(END_OF_TEXT)],
        pad_token_id=hf.convert_tokens_to_ids(END_OF_TEXT),
        bos_token_id=hf.convert_tokens_to_ids(END_OF_TEXT),
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
    )
    gen.save_pretrained(out)

    if kind == "llava":
        save_llava_processor(out, hf)
    elif kind == "qwen2vl":
        save_qwen2vl_processor(out, hf)

    info = {
        "kind": kind,
        "architecture": config.architectures[0],
        "seed": seed,
        "tokenizer_size": len(hf),
        "vocab_size": vocab_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "closer_bias": bias,
        "thinks": thinks,
        "bias_channel_level": round(level, 4),
        "favoured_tokens": len(favour),
        "avoided_tokens": len(avoid),
        "favoured_mass_t1": round(favoured_mass, 4),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "seconds": round(time.perf_counter() - started, 2),
    }
    (out / "tiny_model.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def nest_clip_weights(out: Path) -> None:
    """Name the CLIP tower's weights as llava-hf checkpoints do.

    transformers 5 saves them as ``vision_tower.embeddings...``; vLLM's LLaVA
    loads ``vision_tower.vision_model.embeddings...`` (the layout of the
    published checkpoints) and refuses the other.
    """
    from safetensors.torch import load_file, save_file

    path = out / "model.safetensors"
    weights = load_file(path)
    renamed = {}
    for name, tensor in weights.items():
        if name.startswith("vision_tower.") and not name.startswith("vision_tower.vision_model."):
            name = "vision_tower.vision_model." + name[len("vision_tower.") :]
        renamed[name] = tensor.contiguous()
    save_file(renamed, path, metadata={"format": "pt"})


def save_llava_processor(out: Path, hf) -> None:
    """LLaVA's processor: CLIP preprocessing (PIL backend) to one fixed square."""
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": LLAVA_IMAGE_SIZE},
        crop_size={"height": LLAVA_IMAGE_SIZE, "width": LLAVA_IMAGE_SIZE},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=hf,
        patch_size=14,
        vision_feature_select_strategy="full",
        chat_template=chat_template("llava"),
        image_token=LLAVA_IMAGE,
        num_additional_image_tokens=1,  # CLIP's class token, kept by the "full" strategy
    )
    processor.save_pretrained(out)


def save_qwen2vl_processor(out: Path, hf) -> None:
    """Qwen2-VL's processor with the PIL image backend and small images.

    transformers 5.19 builds a Qwen2VLProcessor only with a video processor,
    and its video processors need torchvision: this works with the ops-less
    torchvision that setup.sh leaves, not without one.
    """
    from transformers import Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import (
        Qwen2VLVideoProcessor,
    )

    # At most 16 x 16 patches of 14 px (a 224 x 224 image): 64 image tokens.
    sizes = dict(
        min_pixels=56 * 56,
        max_pixels=224 * 224,
        size={"shortest_edge": 56 * 56, "longest_edge": 224 * 224},
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
    )
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessorPil(**sizes),
        tokenizer=hf,
        video_processor=Qwen2VLVideoProcessor(**sizes),
        chat_template=chat_template("qwen2vl"),
    )
    processor.save_pretrained(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to (re)create")
    parser.add_argument("--kind", choices=("text", "llava", "qwen2vl"), default="text")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab", type=int, default=1024, help="BPE vocabulary size before special tokens")
    parser.add_argument("--closer-bias", type=float, default=3.5, help="logit lean towards ending tokens; 0: none")
    parser.add_argument("--thinks", action="store_true", help="lean towards </think>: a reasoning model's output shape")
    args = parser.parse_args(argv)
    info = build(args.out, args.kind, args.seed, args.vocab, args.closer_bias, args.thinks)
    json.dump(info, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
