"""Incremental detokenization with stop strings.

Text is released only when it is final: never half of a multi-byte character (the decoder's
U+FFFD replacement marks an incomplete one), and never a tail that could still grow into a stop
string, so a stream never shows text that a later stop string would have cut.
"""
from __future__ import annotations


class IncrementalDetokenizer:
    def __init__(self, tokenizer, prompt_ids: list[int], stop: list[str], skip_special_tokens: bool = True,
                 include_stop_str_in_output: bool = False):
        self.tokenizer = tokenizer
        self.stop = stop
        self.skip_special = skip_special_tokens
        self.include_stop = include_stop_str_in_output
        self.ids: list[int] = []
        self.text = ""  # all decoded text so far (may include a stop string)
        self.released = 0  # chars of ``text`` handed out
        self._prefix = max(0, len(prompt_ids) - 4)  # decode with a little left context for spacing
        self._context_ids = list(prompt_ids[self._prefix:])
        self._context_text = self._decode(self._context_ids)
        self.stopped_by: str | None = None
        self._max_stop = max((len(s) for s in stop), default=0)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special)

    def add(self, new_ids: list[int]) -> tuple[str, bool]:
        """Append tokens; return (newly released text, stopped by a stop string)."""
        self.ids.extend(new_ids)
        full = self._decode(self._context_ids + self.ids)
        if full.startswith(self._context_text):
            candidate = full[len(self._context_text):]
        else:  # merged across the boundary: fall back to decoding the output alone
            candidate = self._decode(self.ids)
        if candidate.endswith("\ufffd"):
            candidate = candidate[: len(candidate.rstrip("\ufffd"))]
        if len(candidate) > len(self.text) or not candidate.startswith(self.text):
            self.text = candidate if candidate.startswith(self.text) else self.text
        if self.stop:
            hit = self._find_stop(max(0, self.released - self._max_stop))
            if hit is not None:
                pos, s = hit
                end = pos + len(s) if self.include_stop else pos
                self.text = self.text[:end]
                self.stopped_by = s
                return self._release(len(self.text)), True
        hold = self._max_stop - 1 if self.stop else 0
        return self._release(max(self.released, len(self.text) - hold)), False

    def _find_stop(self, start: int):
        best = None
        for s in self.stop:
            i = self.text.find(s, start)
            if i >= 0 and (best is None or i < best[0]):
                best = (i, s)
        return best

    def _release(self, upto: int) -> str:
        out = self.text[self.released:upto]
        self.released = max(self.released, upto)
        return out

    def flush(self) -> str:
        """At the end of a request: release whatever was held back."""
        return self._release(len(self.text))
