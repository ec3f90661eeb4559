"""Token-level stop conditions, checked after each appended output token (stop *strings* are the
engine's job, after detokenizing; it ends the request with ``Scheduler.finish_request``)."""
from __future__ import annotations

from sparkserve.request import Request, RequestStatus


def early_stop_ids(request: Request) -> tuple[int, ...]:
    """The tokens the sampler must not emit before ``min_tokens`` outputs (runner/min_tokens.py): the
    request's stop token ids and its eos ids (unless ``ignore_eos``); () when nothing is to be masked."""
    params = request.params
    if len(request.output_token_ids) >= params.min_tokens:
        return ()
    eos = () if params.ignore_eos else tuple(request.eos_token_ids)
    return tuple(dict.fromkeys((*params.stop_token_ids, *eos)))


def check_stop(request: Request) -> tuple[RequestStatus, int | None] | None:
    """(finished status, stop_reason) if the request's last output token ends it, else None.

    Rules, in order:
      * a stop token counts only at output index >= ``params.min_tokens`` (at least ``min_tokens``
        tokens come before it; the runner masks stop/eos while ``num_output_tokens < min_tokens``
        (``early_stop_ids``, runner/min_tokens.py), which makes the two views agree);
      * ``params.stop_token_ids`` -> FINISHED_STOPPED, stop_reason = the token id;
      * eos (``request.eos_token_ids``, unless ``params.ignore_eos``) -> FINISHED_STOPPED,
        stop_reason None (vLLM's convention: the eos token is not a "stop reason");
      * ``len(output) >= request.max_output_tokens`` (max_tokens or the context limit) ->
        FINISHED_LENGTH. A stop token that is also the last allowed token reports "stop".
    """
    params = request.params
    output = request.output_token_ids
    token_id = output[-1]
    if len(output) > params.min_tokens:
        if token_id in params.stop_token_ids:
            return RequestStatus.FINISHED_STOPPED, token_id
        if not params.ignore_eos and token_id in request.eos_token_ids:
            return RequestStatus.FINISHED_STOPPED, None
    if len(output) >= request.max_output_tokens:
        return RequestStatus.FINISHED_LENGTH, None
    return None
