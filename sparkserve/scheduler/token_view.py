"""Read a slice of a request's tokens without building ``prompt + output`` every time."""
from __future__ import annotations

from sparkserve.request import Request


def token_slice(request: Request, start: int, end: int) -> list[int]:
    """Tokens at positions ``[start, end)`` of ``request.all_token_ids`` (a new list)."""
    prompt = request.prompt_token_ids
    num_prompt = len(prompt)
    if end <= num_prompt:
        return prompt[start:end]
    output = request.output_token_ids
    if start >= num_prompt:
        return output[start - num_prompt : end - num_prompt]
    return prompt[start:] + output[: end - num_prompt]
