"""The Hugging Face integration on a tiny random Llama: dense() equals sdpa on the real tokens
of a left-padded batch; a local/global pattern generates the same tokens with and without a
KV cache."""
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="pip install transformers (in the dev extras)")

import sparseflash as sf  # noqa: E402
from sparseflash.integrations.transformers import register  # noqa: E402


def tiny_llama(attn):
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=256, pad_token_id=0)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation=attn).eval()


def padded_batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 97, (2, 40), generator=g)
    mask = torch.ones(2, 40, dtype=torch.long)
    mask[1, :15] = 0                     # left padding: 15 pads, then 25 tokens
    ids[1, :15] = 0
    return ids, mask


def test_dense_matches_sdpa_on_real_tokens_with_left_padding():
    name = register(sf.dense(), block_size=16, name="sfa_dense_test")
    ids, mask = padded_batch()
    with torch.no_grad():
        ref = tiny_llama("sdpa")(input_ids=ids, attention_mask=mask).logits
        got = tiny_llama(name)(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(got[real], ref[real], atol=2e-5, rtol=1e-4)


def test_generation_with_cache_equals_without():
    name = register(sf.local(1) | sf.global_blocks(1), block_size=16, name="sfa_local_test")
    model = tiny_llama(name)
    ids, mask = padded_batch()
    kw = dict(attention_mask=mask, max_new_tokens=24, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        cached = model.generate(ids, use_cache=True, **kw)
        uncached = model.generate(ids, use_cache=False, **kw)
    assert cached.shape == (2, 64)
    assert torch.equal(cached, uncached)
    # the pattern matters: dense attention generates something else for at least one sequence
    dense = tiny_llama(register(sf.dense(), block_size=16, name="sfa_dense_gen"))
    with torch.no_grad():
        assert not torch.equal(dense.generate(ids, use_cache=True, **kw), cached)


def test_training_step_with_dropout_and_bad_names():
    name = register(sf.local(1) | sf.global_blocks(1), block_size=16, name="sfa_train_test")
    model = tiny_llama(name)
    model.config.attention_dropout = 0.1
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = 0.1
    model.train()
    ids, mask = padded_batch()
    out = model(input_ids=ids, attention_mask=mask, labels=ids)
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with pytest.raises(ValueError, match="flash"):
        register(sf.dense(), name="my_flash_attn")
    with pytest.raises(TypeError, match="pattern"):
        register("local(1)")
