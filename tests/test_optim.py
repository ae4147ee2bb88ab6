import math

import pytest
import torch

from training.core.config import preset
from training.core.model import GPT
from training.core.optim import SGDW, build_optimizer, lambda_at, lr_at, param_groups


def test_paper_lr_schedule_values():
    c = preset("paper")
    assert lr_at(c, 1) == pytest.approx(1e-3 / 1500)
    assert lr_at(c, 200) == pytest.approx(1.3333e-4, rel=1e-4)       # reference CSV: 1.33e-4 at step 200
    assert lr_at(c, 1500) == pytest.approx(1e-3)
    mid = 1500 + (10_000 - 1500) / 2
    assert lr_at(c, int(mid)) == pytest.approx(0.5e-3, rel=1e-3)
    assert lr_at(c, 8200) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 6700 / 8500)))
    assert lr_at(c, 8200) == pytest.approx(1.066e-4, rel=2e-3)        # reference CSV: 1.066e-4 at 8,200
    assert lr_at(c, 8400) == pytest.approx(1e-4)                      # clamped at 10 %
    assert lr_at(c, 10_000) == pytest.approx(1e-4)


def test_lambda_schedule():
    c = preset("paper")
    assert lambda_at(c, 1) == 2.0 and lambda_at(c, 3999) == 2.0
    assert lambda_at(c, 4000) == 4.0 and lambda_at(c, 10_000) == 4.0
    assert lambda_at(c.replace(lambda_probe2=None), 5000) == 2.0


def test_decay_groups_exclude_only_layernorm():
    cfg = preset("test")
    model = GPT(cfg, 50)
    decay, no_decay = param_groups(model, 0.5)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.5 and no_decay["weight_decay"] == 0.0
    assert {names[id(p)] for p in no_decay["params"]} == {n for n in names.values() if ".ln" in n or n.startswith("ln_f")}
    assert "tok_emb.weight" in {names[id(p)] for p in decay["params"]}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_sgdw_applies_decoupled_decay_after_the_step():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = SGDW([{"params": [p], "weight_decay": 0.5}], lr=0.1, momentum=0.0, nesterov=False)
    p.grad = torch.tensor([0.2, 0.4])
    opt.step()
    expected = (torch.tensor([1.0, -2.0]) - 0.1 * torch.tensor([0.2, 0.4])) * (1 - 0.1 * 0.5)
    assert torch.allclose(p.detach(), expected)


@pytest.mark.parametrize("name", ["adamw", "sgd", "sgd_momentum", "sgdw_nesterov"])
def test_every_registered_optimizer_builds_and_steps(name):
    cfg = preset("test").replace(optimizer=name)
    model = GPT(cfg, 50)
    opt, spec = build_optimizer(model, cfg, torch.device("cpu"))
    before = model.blocks[0].attn.qkv.weight.detach().clone()
    model(torch.randint(0, 50, (2, 8))).sum().backward()
    opt.step()
    assert not torch.equal(before, model.blocks[0].attn.qkv.weight)
    assert not spec.needs_closure
