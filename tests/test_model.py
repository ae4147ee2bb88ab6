import torch

from training.core.config import preset
from training.core.model import GPT, trunk_names, trunk_parameters, trunk_size


def test_paper_parameter_counts_on_meta_device():
    cfg = preset("paper")
    with torch.device("meta"):
        model = GPT(cfg, 50_257)
    assert all(p.is_meta for p in model.parameters())
    assert model.num_params() == 51_045_888
    assert sum(p.numel() for _, p in trunk_parameters(model)) == 25_165_824 == trunk_size(cfg)
    assert sum(p.numel() for _, p in trunk_parameters(model, block=3)) == 3_145_728 == trunk_size(cfg, 0)
    assert model.lm_head.weight is model.tok_emb.weight


def test_trunk_order_is_registration_order():
    cfg = preset("test")
    model = GPT(cfg, 100)
    names = [n for n, _ in trunk_parameters(model)]
    assert names == trunk_names(cfg)
    assert names[:4] == ["blocks.0.attn.qkv.weight", "blocks.0.attn.out_proj.weight",
                         "blocks.0.mlp.w_up.weight", "blocks.0.mlp.w_down.weight"]
    registered = [n for n, _ in model.named_parameters() if n in set(names)]
    assert registered == names


def test_sdpa_and_math_attention_agree():
    cfg = preset("test").replace(n_layer=3, d_model=64, n_head=4, d_ff=128)
    torch.manual_seed(0)
    model = GPT(cfg, 300)
    x = torch.randint(0, 300, (3, cfg.seq_len))
    with torch.no_grad():
        a = model.set_attention("sdpa")(x)
        b = model.set_attention("math")(x)
    assert a.dtype == torch.float32
    assert (a - b).abs().max().item() < 1e-5
    # and the math path supports forward-mode autodiff
    from torch.func import jvp
    params = dict(model.named_parameters())
    w = "blocks.0.attn.qkv.weight"
    tangent = torch.randn_like(params[w])

    def f(weight):
        return torch.func.functional_call(model, {**params, w: weight}, (x,)).sum()
    _, d = jvp(f, (params[w].detach(),), (tangent,))
    assert torch.isfinite(d)


def test_attention_only_has_no_mlp_parameters():
    cfg = preset("test").replace(attn_only=True)
    model = GPT(cfg, 100)
    names = [n for n, _ in model.named_parameters()]
    assert not any("mlp" in n or "ln2" in n for n in names)
    assert trunk_names(cfg, 0) == ["blocks.0.attn.qkv.weight", "blocks.0.attn.out_proj.weight"]
    x = torch.randint(0, 100, (2, 16))
    model(x).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_init_statistics():
    cfg = preset("test").replace(d_model=128, n_head=4, d_ff=512)
    model = GPT(cfg, 1000)
    w = model.blocks[0].mlp.w_up.weight
    assert abs(w.std().item() - 0.02) < 0.001
    assert torch.all(model.blocks[0].ln1.weight == 1) and torch.all(model.blocks[0].ln1.bias == 0)
