"""Incremental detokenization with stop strings, in work proportional to the new tokens.

Text is released only when it is final: never half of a multi-byte character (the decoder's
U+FFFD replacement marks an incomplete one), and never a tail that could still grow into a stop
string, so a stream never shows text that a later stop string would have cut.

Each step decodes a short window, not the whole output: ``_window`` holds the tokens since the
last point where the text was complete (plus, at first, a few prompt tokens as left context, so a
leading space decodes as it would in context); its first ``_num_read`` tokens are text already
taken, ``_read_text`` their decoding. The new text is what decoding the whole window adds to
``_read_text``. Once it ends on a complete character the window slides past it. Only the text not
yet released is kept (``_pending``: at most the longest stop string, plus this step's text).
"""
from __future__ import annotations

PROMPT_CONTEXT_TOKENS = 4


class IncrementalDetokenizer:
    def __init__(self, tokenizer, prompt_ids: list[int], stop: list[str], skip_special_tokens: bool = True,
                 include_stop_str_in_output: bool = False):
        self.tokenizer = tokenizer
        self.stop = stop
        self.skip_special = skip_special_tokens
        self.include_stop = include_stop_str_in_output
        self.stopped_by: str | None = None
        self._max_stop = max((len(s) for s in stop), default=0)
        self._window: list[int] = list(prompt_ids[-PROMPT_CONTEXT_TOKENS:])
        self._num_read = len(self._window)
        self._read_text = self._decode(self._window)
        self._taken = 0  # chars of the window's new text already moved to ``_pending``
        self._has_context = bool(self._window)  # the window still starts with prompt tokens
        self._pending = ""  # decoded, not yet released

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special)

    def _new_text(self, new_ids: list[int]) -> str:
        """The text ``new_ids`` complete (it may end before their last, incomplete character)."""
        self._window.extend(new_ids)
        full = self._decode(self._window)
        if self._has_context and not full.startswith(self._read_text):
            # the output merged with the prompt context on decode: go on without the context
            del self._window[:self._num_read]
            self._num_read, self._read_text, self._has_context = 0, "", False
            full = self._decode(self._window)
        complete = not full.endswith("\ufffd")
        fresh = full[len(self._read_text):] if complete else full[len(self._read_text):].rstrip("\ufffd")
        out = fresh[self._taken:]
        self._taken = max(self._taken, len(fresh))
        if complete:  # slide: the next window starts at the tokens just read
            del self._window[:self._num_read]
            self._num_read = len(self._window)
            self._read_text = self._decode(self._window)
            self._taken, self._has_context = 0, False
        return out

    def add(self, new_ids: list[int]) -> tuple[str, bool]:
        """Append tokens; return (newly released text, stopped by a stop string)."""
        self._pending += self._new_text(new_ids)
        if not self.stop:
            out, self._pending = self._pending, ""
            return out, False
        hit = self._find_stop()
        if hit is not None:
            pos, s = hit
            end = pos + len(s) if self.include_stop else pos
            out, self._pending = self._pending[:end], ""
            self.stopped_by = s
            return out, True
        keep = min(len(self._pending), self._max_stop - 1)  # could still become a stop string
        out, self._pending = self._pending[:len(self._pending) - keep], self._pending[len(self._pending) - keep:]
        return out, False

    def _find_stop(self) -> tuple[int, str] | None:
        """The earliest stop string in the unreleased text (a stop string never starts in released
        text: the last ``max_stop - 1`` characters are always held back)."""
        best = None
        for s in self.stop:
            i = self._pending.find(s)
            if i >= 0 and (best is None or i < best[0]):
                best = (i, s)
        return best

    def flush(self) -> str:
        """At the end of a request: release whatever was held back."""
        out, self._pending = self._pending, ""
        return out
