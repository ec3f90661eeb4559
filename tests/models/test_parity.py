"""sparkserve vs transformers on small random-weight checkpoints written by save_pretrained."""
import pytest
import torch

from sparkserve.attention.base import PagedAttentionContext
from sparkserve.attention.registry import get_backend
from sparkserve.models.loader import load_model
from sparkserve.runner.input_batch import flatten
from sparkserve.runner.kv_cache import allocate_kv_caches
from sparkserve.step import SamplingMeta, ScheduledSeq, StepPlan
from tests.models.hf_fixtures import make_hf_model

transformers = pytest.importorskip("transformers")
BLOCK = 4


@pytest.fixture(scope="module", params=[("qwen3", False), ("qwen3", True), ("llama", False)],
                ids=["qwen3", "qwen3-tied", "llama"])
def models(request, tmp_path_factory):
    arch, tied = request.param
    path = make_hf_model(str(tmp_path_factory.mktemp(arch)), arch, tied)
    ours, cfg = load_model(path, "float32")
    ref = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return ours, ref, cfg


class PagedDriver:
    """Feeds chunks of several sequences through the paged cache, like the runner does (with the
    runner's ``auto`` attention backend: the native one where it built, torch with SPARKSERVE_NATIVE=0)."""

    def __init__(self, model, cfg, num_blocks=64):
        self.model, self.backend = model, get_backend("auto")
        self.caches = allocate_kv_caches(cfg.num_hidden_layers, num_blocks, BLOCK, cfg.num_key_value_heads,
                                         cfg.head_dim, torch.float32, torch.device("cpu"))
        self.next_block = 1
        self.tables: dict[int, list[int]] = {}
        self.computed: dict[int, int] = {}

    def step(self, chunks: dict[int, list[int]]) -> dict[int, torch.Tensor]:
        seqs = []
        for sid, toks in chunks.items():
            done = self.computed.get(sid, 0)
            table = self.tables.setdefault(sid, [])
            while len(table) * BLOCK < done + len(toks):
                table.append(self.next_block)
                self.next_block += 1
            seqs.append(ScheduledSeq(str(sid), toks, done, list(table), SamplingMeta()))
            self.computed[sid] = done + len(toks)
        batch = flatten(StepPlan(seqs), BLOCK, torch.device("cpu"))
        meta = self.backend.build_metadata(batch.paged, torch.device("cpu"))
        ctx = PagedAttentionContext(self.backend, meta, self.caches, self.model.scale)
        with torch.no_grad():
            hidden, _ = self.model(batch.input_ids, batch.positions, ctx)
            logits = self.model.compute_logits(hidden)
        qs = batch.query_start
        return {sid: logits[qs[i]:qs[i + 1]] for i, sid in enumerate(chunks)}


def ref_logits(ref, ids):
    with torch.no_grad():
        return ref(torch.tensor([ids])).logits[0]


@pytest.mark.parametrize("length", [1, 5, 17])
def test_prefill_matches(models, length):
    ours, ref, cfg = models
    ids = torch.randint(0, cfg.vocab_size, (length,), generator=torch.Generator().manual_seed(length)).tolist()
    got = PagedDriver(ours, cfg).step({0: ids})[0]
    torch.testing.assert_close(got, ref_logits(ref, ids), atol=1e-4, rtol=0)


def test_mixed_batch_chunked_prefill_and_decode(models):
    """Three sequences in one flat batch: chunked prefill, fresh prefill and token-by-token decode."""
    ours, ref, cfg = models
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, cfg.vocab_size, (n,), generator=g).tolist() for n in (13, 6, 9)]
    drv = PagedDriver(ours, cfg)
    drv.step({0: prompts[0][:5], 2: prompts[2]})  # seq 0 chunk 1, seq 2 whole
    out = drv.step({0: prompts[0][5:11], 1: prompts[1], 2: [7]})  # seq 0 chunk 2 + decode of seq 2
    torch.testing.assert_close(out[0], ref_logits(ref, prompts[0][:11])[5:11], atol=1e-4, rtol=0)
    torch.testing.assert_close(out[1], ref_logits(ref, prompts[1]), atol=1e-4, rtol=0)
    torch.testing.assert_close(out[2], ref_logits(ref, prompts[2] + [7])[-1:], atol=1e-4, rtol=0)
    seqs = {0: prompts[0][:11], 1: prompts[1], 2: prompts[2] + [7]}
    for t in range(6):  # decode steps, each sequence one token
        toks = {sid: [(sid * 31 + t * 7) % cfg.vocab_size] for sid in seqs}
        out = drv.step(toks)
        for sid, tok in toks.items():
            seqs[sid] = seqs[sid] + tok
            torch.testing.assert_close(out[sid], ref_logits(ref, seqs[sid])[-1:], atol=1e-4, rtol=0)


def test_verification_block_on_cached_prefix(models):
    """A multi-token block on top of a cached prefix (what speculative verification sends)."""
    ours, ref, cfg = models
    ids = list(range(3, 3 + 20))
    drv = PagedDriver(ours, cfg)
    drv.step({0: ids[:12]})
    out = drv.step({0: ids[12:20]})[0]
    torch.testing.assert_close(out, ref_logits(ref, ids)[12:20], atol=1e-4, rtol=0)


def test_captured_hidden_states_match_hf(models):
    ours, ref, cfg = models
    ids = list(range(5, 16))
    with torch.no_grad():
        hs = ref(torch.tensor([ids]), output_hidden_states=True).hidden_states
        _, feats = ours.forward_train(torch.tensor([ids]), capture_layer_ids=(-1, 0))
    want = torch.cat([hs[0][0], hs[1][0]], dim=-1)  # embedding output, residual after layer 0
    torch.testing.assert_close(feats[0], want, atol=1e-4, rtol=0)
