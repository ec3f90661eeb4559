"""Tokenizers from a model directory: ``tokenizer.json`` (HF tokenizers) or ``tokenizer.model``
(sentencepiece), plus the jinja2 chat template and end-of-sequence ids."""
from __future__ import annotations

import json
import os

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment


def _read_json(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _token_content(tok) -> str | None:
    return tok.get("content") if isinstance(tok, dict) else tok


class Tokenizer:
    """encode/decode, chat template rendering, special-token ids. Safe to use without torch."""

    def __init__(self, path: str):
        self.path = path
        self.config = _read_json(os.path.join(path, "tokenizer_config.json"))
        tj, sp = os.path.join(path, "tokenizer.json"), os.path.join(path, "tokenizer.model")
        if os.path.exists(tj):
            from tokenizers import Tokenizer as HFTokenizer

            self._hf = HFTokenizer.from_file(tj)
            self._sp = None
            self.vocab_size = self._hf.get_vocab_size(with_added_tokens=True)
            self._special_ids = {t.id if hasattr(t, "id") else i for i, t in self._hf.get_added_tokens_decoder().items()
                                 if getattr(t, "special", True)}
        elif os.path.exists(sp):
            import sentencepiece

            self._hf = None
            self._sp = sentencepiece.SentencePieceProcessor(model_file=sp)
            self.vocab_size = self._sp.get_piece_size()
            self._special_ids = {i for i in range(self.vocab_size) if self._sp.is_control(i)}
        else:
            raise ValueError(f"no tokenizer.json or tokenizer.model in {path!r}")
        self.chat_template = self.config.get("chat_template")
        if isinstance(self.chat_template, list):  # named templates: take "default"
            self.chat_template = {t["name"]: t["template"] for t in self.chat_template}.get("default")
        if self.chat_template is None and os.path.exists(os.path.join(path, "chat_template.jinja")):
            with open(os.path.join(path, "chat_template.jinja")) as f:
                self.chat_template = f.read()
        self._template = None
        self.eos_token_ids = self._eos_ids()
        self.bos_token = _token_content(self.config.get("bos_token"))
        self.add_bos = bool(self.config.get("add_bos_token", False)) and self.bos_token is not None

    def _eos_ids(self) -> tuple[int, ...]:
        ids: list[int] = []
        gen = _read_json(os.path.join(self.path, "generation_config.json"))
        eos = gen.get("eos_token_id", _read_json(os.path.join(self.path, "config.json")).get("eos_token_id"))
        ids += eos if isinstance(eos, list) else ([eos] if eos is not None else [])
        tok = _token_content(self.config.get("eos_token"))
        if tok is not None and self.token_to_id(tok) is not None:
            ids.append(self.token_to_id(tok))
        return tuple(dict.fromkeys(ids))

    def token_to_id(self, token: str) -> int | None:
        if self._hf is not None:
            return self._hf.token_to_id(token)
        i = self._sp.piece_to_id(token)
        return None if i == self._sp.unk_id() and token != self._sp.id_to_piece(i) else i

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        if self._hf is not None:
            ids = self._hf.encode(text, add_special_tokens=add_special_tokens).ids
        else:
            ids = self._sp.encode(text)
        if add_special_tokens and self.add_bos:
            bos = self.token_to_id(self.bos_token)
            if not ids or ids[0] != bos:
                ids = [bos] + ids
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        if self._hf is not None:
            return self._hf.decode(ids, skip_special_tokens=skip_special_tokens)
        if skip_special_tokens:
            ids = [i for i in ids if i not in self._special_ids]
        return self._sp.decode(ids)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True, **kwargs) -> str:
        if not self.chat_template:
            raise ValueError("this model has no chat template; use a completion prompt instead")
        if self._template is None:
            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            env.globals["raise_exception"] = _raise
            self._template = env.from_string(self.chat_template)
        try:
            return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         bos_token=self.bos_token or "",
                                         eos_token=_token_content(self.config.get("eos_token")) or "", **kwargs)
        except jinja2.TemplateError as e:
            raise ValueError(f"chat template failed: {e}") from None


def _raise(message: str):
    raise jinja2.TemplateError(message)
