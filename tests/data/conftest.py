"""Fixtures for the data tests: a tiny byte-level BPE tokenizer with chat templates, a tiny Qwen3."""

from __future__ import annotations

from pathlib import Path

import pytest

# Written for these tests in the style of the public templates: Qwen3 renders reasoning only for
# turns after the last user query and adds an empty think block when thinking is off.
QWEN3_TEMPLATE = """
{%- if messages[0].role == 'system' %}{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}{%- endif %}
{%- set ns = namespace(last_query=-1) %}
{%- for m in messages %}{%- if m.role == 'user' %}{%- set ns.last_query = loop.index0 %}{%- endif %}{%- endfor %}
{%- for m in messages %}
  {%- if m.role == 'user' or (m.role == 'system' and not loop.first) %}
    {{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}
  {%- elif m.role == 'assistant' %}
    {%- set reasoning = m.reasoning_content if m.reasoning_content is defined and m.reasoning_content else '' %}
    {%- if loop.index0 > ns.last_query and (loop.last or reasoning) %}
      {{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' + m.content.lstrip('\\n') }}
    {%- else %}
      {{- '<|im_start|>assistant\\n' + m.content }}
    {%- endif %}
    {{- '<|im_end|>\\n' }}
  {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
  {{- '<|im_start|>assistant\\n' }}
  {%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}
{%- endif %}
"""

LLAMA3_TEMPLATE = """
{{- bos_token }}
{%- for m in messages %}
  {{- '<|start_header_id|>' + m.role + '<|end_header_id|>\\n\\n' + m.content | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}
"""

# ChatML as SmolLM2 ships it: a default system prompt when the conversation has none.
CHATML_TEMPLATE = """
{%- if messages[0].role != 'system' %}{{- '<|im_start|>system\\nYou are a helpful AI assistant.<|im_end|>\\n' }}{%- endif %}
{%- for m in messages %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
"""

# Gemma style: no system role (it is folded into the first user turn), "model" for the assistant,
# every turn trimmed.
GEMMA_TEMPLATE = """
{{- bos_token }}
{%- if messages[0].role == 'system' %}{%- set first = messages[0].content | trim + '\\n\\n' %}{%- set rest = messages[1:] %}
{%- else %}{%- set first = '' %}{%- set rest = messages %}{%- endif %}
{%- for m in rest %}
  {%- set role = 'model' if m.role == 'assistant' else m.role %}
  {{- '<start_of_turn>' + role + '\\n' + (first if loop.first else '') + m.content | trim + '<end_of_turn>\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<start_of_turn>model\\n' }}{%- endif %}
"""

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>",
            "<|end_header_id|>", "<|eot_id|>", "<bos>", "<start_of_turn>", "<end_of_turn>"]
CORPUS = [
    "Hello, how are you? I am fine, thank you. What is the capital of France? Paris is the capital.",
    "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n",
    "The quick brown fox jumps over the lazy dog. Let me think step by step about it.",
    "system user assistant think reasoning answer question 0123456789 + - * / = ( ) [ ] { }",
]


def build_tokenizer(template: str, flavour: str = "qwen"):
    """A ~400-token byte-level BPE tokenizer (trained in milliseconds) with ``template`` attached."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, show_progress=False, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    if flavour == "qwen":
        fast.add_special_tokens({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})
        fast.add_tokens(["<think>", "</think>"])
    elif flavour == "gemma":
        fast.add_special_tokens({"bos_token": "<bos>", "eos_token": "<end_of_turn>", "pad_token": "<|endoftext|>"})
    else:
        fast.add_special_tokens({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "pad_token": "<|endoftext|>"})
    fast.chat_template = template
    return fast


@pytest.fixture(scope="session")
def qwen_tok():
    return build_tokenizer(QWEN3_TEMPLATE, "qwen")


@pytest.fixture(scope="session")
def llama_tok():
    return build_tokenizer(LLAMA3_TEMPLATE, "llama")


@pytest.fixture(scope="session")
def chatml_tok():
    return build_tokenizer(CHATML_TEMPLATE, "qwen")


@pytest.fixture(scope="session")
def gemma_tok():
    return build_tokenizer(GEMMA_TEMPLATE, "gemma")


def build_tiny_model_dir(path: Path) -> Path:
    """A random 2-layer Qwen3 + the test tokenizer saved as a model directory."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = build_tokenizer(QWEN3_TEMPLATE, "qwen")
    torch.manual_seed(0)
    cfg = Qwen3Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=2048,
        tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    model = Qwen3ForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))
