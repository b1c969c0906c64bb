"""The baselines of the EraseDiff paper (docs/baselines.md): each moves its own objective the right way on a tiny model,
keeps the promises particular to it, and passes the shared method contract."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch.nn.functional import mse_loss

import unlearnctl
from unlearnctl import OptionError, UsageError, split_forget
from unlearnctl.builtin.methods.common import BASELINE_STEPS
from unlearnctl.builtin.methods.erasediff import EraseDiff, _ForgetBatch
from unlearnctl.builtin.methods.losses import relabel_loss, uniform_loss
from unlearnctl.builtin.methods.salun import MASK_FILE, SalUn
from unlearnctl.builtin.methods.selective_amnesia import SelectiveAmnesia
from unlearnctl.config import resolve_options
from unlearnctl.contexts.unlearn import UnlearnRun
from unlearnctl.diffusion import add_noise, ddpm_loss, predict_noise
from unlearnctl.models.folder import state_sha256
from unlearnctl.registry import get_registry
from unlearnctl.testing.contracts import check_component_class
from unlearnctl.testing.tiny import tiny_image_set, tiny_model
from unlearnctl.training import TrainOptions, train_model

BASELINES = ["retrain", "finetune", "neggrad", "random-label", "joint", "salun", "blindspot", "selective-amnesia"]
FORGET = 1  # the tiny set's classes are 0, 1, 2
#: small settings for every option a method has (others keep their defaults)
FAST = {
    "steps": 3, "remain_batch_size": 8, "forget_batch_size": 8, "batch_size": 8, "warmup_steps": 2,
    "proxy_steps": 5, "samples_per_class": 4, "fisher_samples": 4, "fisher_timesteps": 10, "sample_steps": 4,
}  # fmt: skip


def method_class(name: str):
    return get_registry().get("method", name).cls


def tiny_split(data=None, forget_class: int = FORGET):
    data = data if data is not None else tiny_image_set()
    return split_forget(data, {i for i, lbl in zip(data.ids, data.labels, strict=True) if lbl == forget_class})


def make_method(name: str, **options):
    cls = method_class(name)
    values = {k: v for k, v in FAST.items() if k in cls.Options.model_fields}
    values.update(options)
    return cls(resolve_options(cls, sets=values))


def run_method(name: str, model=None, split=None, seed: int = 0, out_dir: Path | None = None, method=None, **options):
    """Run a method on the tiny model (or ``model``) forgetting class 1; return the run (weights in model.unet)."""
    model = model if model is not None else tiny_model()
    split = split if split is not None else tiny_split()
    method = method if method is not None else make_method(name, **options)
    if hasattr(method, "check"):
        method.check(model, split)
    run = UnlearnRun(model, split, seed=seed, total_steps=method.options.steps, out_dir=out_dir)
    method.unlearn(run)
    run.finish()
    return run


@pytest.fixture(scope="module")
def trained_state():
    """A tiny conditional model trained briefly on all three classes (so there is something to forget)."""
    options = TrainOptions(arch="tiny", steps=150, batch_size=24, lr=3e-3, warmup_steps=10, grid_per_class=0)
    with torch.random.fork_rng(devices=[]):
        torch.set_num_threads(1)
        result = train_model(tiny_image_set(), options, seed=0)
    return result.model


@pytest.fixture
def trained(trained_state):
    return copy.deepcopy(trained_state)


def fixed_draws(model, x0: torch.Tensor, seed: int = 123):
    """(x_t, t, eps) for evaluation: the same draws before and after unlearning."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, model.scheduler.config.num_train_timesteps, (len(x0),), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    return add_noise(model.scheduler, x0, eps, t), t, eps


@torch.no_grad()
def ddpm_loss_on(model, data, seed: int = 123) -> float:
    x0 = torch.stack([data[i][0] for i in range(len(data))])
    labels = torch.tensor(data.labels)
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, model.scheduler.config.num_train_timesteps, (len(x0),), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    return ddpm_loss(model.unet.eval(), model.scheduler, x0, labels if model.conditional else None, t, eps).item()


@torch.no_grad()
def gap_to_kept(model, split) -> float:
    """mean over kept classes c of || eps(x_t, c_f) - eps(x_t, c) ||^2 on the forget images (fixed draws)."""
    x0 = torch.stack([split.forget[i][0] for i in range(len(split.forget))])
    x_t, t, _ = fixed_draws(model, x0)
    unet = model.unet.eval()
    pred_f = predict_noise(unet, x_t, t, torch.full((len(x0),), FORGET))
    gaps = [mse_loss(pred_f, predict_noise(unet, x_t, t, torch.full((len(x0),), c))) for c in split.remain_classes]
    return float(torch.stack(gaps).mean())


# --- the shared contract ------------------------------------------------------------------------


def test_every_baseline_is_registered_as_a_builtin() -> None:
    registry = get_registry()
    for name in BASELINES:
        info = registry.get("method", name)
        assert info.provider == "builtin.methods"
        assert info.cls.name == name


@pytest.mark.parametrize("name", BASELINES)
def test_contract(name: str) -> None:
    """Options render with help text, defaults validate, unknown keys are rejected by name."""
    check_component_class(method_class(name))


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("retrain", "steps", 0),
        ("retrain", "lr_schedule", "step"),
        ("finetune", "remain_batch_size", 0),
        ("neggrad", "alpha", -1.0),
        ("neggrad", "forget_loss_max", 0),
        ("random-label", "lr", 0),
        ("joint", "target", "noise"),
        ("joint", "lambda", -0.1),
        ("salun", "threshold", 0),
        ("salun", "saliency_loss", "l1"),
        ("blindspot", "proxy_steps", 0),
        ("selective-amnesia", "fisher_samples", 0),
        ("selective-amnesia", "gamma", -1),
    ],
)
def test_bad_option_values_are_rejected(name: str, key: str, value: object) -> None:
    with pytest.raises(OptionError, match=key):
        resolve_options(method_class(name), sets={key: value})


def test_retrain_defaults_are_the_training_recipe() -> None:
    """Same recipe as `unlearnctl train` (the built-in model's), by construction."""
    o, t = method_class("retrain").Options(), TrainOptions()
    for key in o.model_dump():
        assert getattr(o, key) == getattr(t, key), key


@pytest.mark.parametrize("name", [n for n in BASELINES if n != "retrain"])
def test_shared_defaults_match_erasediff(name: str) -> None:
    """Same optimizer, batches, clipping and EMA as EraseDiff: a fair comparison. The step budget is the
    baselines' own (EraseDiff's was tuned to 600 by docs/protocol.md; theirs stay at 150)."""
    ours, theirs = method_class(name).Options(), EraseDiff.Options()
    shared = ["lr", "betas", "remain_batch_size", "forget_batch_size", "grad_clip", "ema_decay",
              "save_ema", "antithetic", "class_dropout", "weight_decay", "lr_schedule", "lr_warmup_steps"]  # fmt: skip
    present = [k for k in shared if k in type(ours).model_fields]
    assert {"lr", "remain_batch_size", "grad_clip", "ema_decay"} <= set(present)
    for key in present:
        assert getattr(ours, key) == getattr(theirs, key), key
    assert ours.steps == BASELINE_STEPS == 150 and theirs.steps == 600


def test_joint_weighs_f_like_erasediffs_fixed_rule() -> None:
    assert method_class("joint").Options().lambda_ == EraseDiff.Options().lambda_


def test_conditional_only_flags() -> None:
    needs_classes = {n for n in BASELINES if method_class(n).conditional_only}
    assert needs_classes == {"random-label", "salun", "selective-amnesia"}


@pytest.mark.parametrize("name", ["retrain", "finetune", "neggrad", "joint", "blindspot"])
def test_runs_on_an_unconditional_model(name: str) -> None:
    model = tiny_model(conditional=False)
    before = state_sha256(model.unet)
    run = run_method(name, model=model)
    assert state_sha256(model.unet) != before
    assert all(torch.isfinite(p).all() for p in model.unet.parameters())
    assert run.optimizer_steps >= FAST["steps"]


@pytest.mark.parametrize("name", ["random-label", "salun"])
def test_relabel_methods_refuse_an_unconditional_model(name: str) -> None:
    with pytest.raises(UsageError, match="class-conditional"):
        make_method(name).check(tiny_model(conditional=False), tiny_split())


@pytest.mark.parametrize("name", BASELINES)
def test_same_seed_same_weights(name: str) -> None:
    a, b = tiny_model(), tiny_model()
    run_method(name, model=a, seed=3)
    run_method(name, model=b, seed=3)
    assert state_sha256(a.unet) == state_sha256(b.unet)  # exact: same seed, same ops, same thread count


# --- the erasure losses are EraseDiff's -----------------------------------------------------------


def test_relabel_and_uniform_losses_are_erasediffs() -> None:
    model, g = tiny_model(), torch.Generator().manual_seed(0)
    x_t, t = torch.randn((6, 1, 8, 8), generator=g), torch.randint(0, 1000, (6,), generator=g)
    c_f, c_hat, u = torch.full((6,), 1), torch.tensor([0, 2, 0, 2, 2, 0]), torch.rand((6, 1, 8, 8), generator=g)
    erasediff = EraseDiff()
    # exact: forget_loss calls these very functions on the same tensors (same ops, same thread count)
    expected = erasediff.forget_loss(model.unet, _ForgetBatch(x_t, t, c_f, c_hat=c_hat))
    assert relabel_loss(model.unet, x_t, t, c_f, c_hat).item() == expected.item()
    expected = erasediff.forget_loss(model.unet, _ForgetBatch(x_t, t, c_f, u=u))
    assert uniform_loss(model.unet, x_t, t, c_f, u).item() == expected.item()


@pytest.mark.parametrize("target", ["relabel", "uniform"])
def test_joint_is_erasediff_with_the_fixed_lambda_rule(target: str) -> None:
    """grad q = grad f (spec, step 2): under lambda_rule=fixed the bilevel update is the joint one.

    Bit-identical by construction, on any CPU and thread count, because lambda is a power of two. Both
    methods draw the same batches and noise in the same order and run the same forward passes; only where
    lambda enters differs. joint differentiates F + lambda f in one backward pass (lambda scales the
    gradient flowing back from f; each weight's gradient is the sum of two contributions, one per forward
    pass); erasediff differentiates F and f apart and adds g_F + lambda g_q. Every backward op is linear in
    the gradient it receives and multiplying by 2^-3 is exact in float32 (no overflow, no subnormals here),
    so both round the same numbers, scaled by 2^-3: lambda g_q is exactly joint's f part, and a + b == b + a.
    (The tiny UNet uses each weight once per forward pass, so there is one sum per weight.)
    With lambda = 0.1 (the default, whose equality test_joint_weighs_f_like_erasediffs_fixed_rule checks) the
    two round differently -- up to 2.9e-6 apart after 4 steps -- and no tolerance follows from the computation:
    Adam steps by about lr g / (|g| + 1e-8), so a rounding difference of 1e-10 in a gradient entry near 0
    moves a weight by up to 1e-4 * 1e-10 / 1e-8 = 1e-6 per step, and a flipped sign by 2 lr.
    """
    lam = 0.125  # 2^-3
    a, b = tiny_model(), tiny_model()
    run_method("joint", model=a, target=target, steps=4, **{"lambda": lam})
    sets = {"steps": 4, "remain_batch_size": 8, "forget_batch_size": 8, "target": target, "lambda_rule": "fixed"}
    run_method("erasediff", model=b, method=EraseDiff(resolve_options(EraseDiff, sets={**sets, "lambda": lam})))
    assert state_sha256(a.unet) == state_sha256(b.unet)
    # ... and differs from EraseDiff under an adaptive rule
    c = tiny_model()
    bome = EraseDiff(resolve_options(EraseDiff, sets={**sets, "lambda_rule": "bome"}))
    run_method("erasediff", model=c, method=bome)
    assert state_sha256(c.unet) != state_sha256(a.unet)


# --- each method moves its objective the right way -------------------------------------------------


def test_finetune_lowers_the_remain_loss_and_ignores_the_forget_set(monkeypatch: pytest.MonkeyPatch) -> None:
    model, split = tiny_model(), tiny_split()
    asked: list[str] = []
    original = UnlearnRun.batches

    def spy(self, which, batch_size):
        asked.append(which)
        return original(self, which, batch_size)

    monkeypatch.setattr(UnlearnRun, "batches", spy)
    before = ddpm_loss_on(model, split.remain)
    run_method("finetune", model=model, split=split, steps=30, lr=1e-3, ema_decay=0.0)
    assert ddpm_loss_on(model, split.remain) < 0.8 * before
    assert asked == ["remain"]


def test_neggrad_raises_the_forget_loss_without_wrecking_the_rest(trained) -> None:
    split = tiny_split()
    forget0, remain0 = ddpm_loss_on(trained, split.forget), ddpm_loss_on(trained, split.remain)
    run = run_method("neggrad", model=trained, split=split, steps=30, lr=1e-3, ema_decay=0.0)
    forget1, remain1 = ddpm_loss_on(trained, split.forget), ddpm_loss_on(trained, split.remain)
    assert forget1 > 2 * forget0  # ascent on D_f ...
    assert remain1 < max(2 * remain0, 0.5) and forget1 - forget0 > 3 * (remain1 - remain0)  # ... not on D_r
    assert run.last_values["loss_f"] > run.last_values["loss_r"]


def test_neggrad_ascent_stops_at_the_ceiling(trained, tmp_path: Path) -> None:
    split = tiny_split()
    low = ddpm_loss_on(trained, split.forget) / 10  # far below the current forget loss
    capped = copy.deepcopy(trained)
    run_method("neggrad", model=capped, split=split, steps=10, lr=1e-3, forget_loss_max=low, out_dir=tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [line["ascent"] for line in lines] == [0.0] * 10  # the forget term never had a gradient
    free = copy.deepcopy(trained)
    run_method("neggrad", model=free, split=split, steps=10, lr=1e-3, forget_loss_max=None)
    assert ddpm_loss_on(capped, split.forget) < ddpm_loss_on(free, split.forget)


@pytest.mark.parametrize("name", ["random-label", "salun"])
def test_forget_class_prediction_moves_toward_the_kept_classes(trained, name: str) -> None:
    split = tiny_split()
    before = gap_to_kept(trained, split)
    run_method(name, model=trained, split=split, steps=20, lr=1e-3, ema_decay=0.0)
    assert gap_to_kept(trained, split) < 0.5 * before


def test_salun_mask_is_saved_and_masked_weights_do_not_move(trained, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    split = tiny_split()
    original = {n: p.detach().clone() for n, p in trained.unet.named_parameters()}
    run_method("salun", model=trained, split=split, steps=5, lr=1e-3, out_dir=tmp_path, threshold=0.3)
    masks = load_file(str(tmp_path / MASK_FILE))
    assert set(masks) == set(original)
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    assert kept == round(0.3 * total)  # exact: topk keeps round(threshold * n) weights, a count
    moved = 0
    for name, p in trained.unet.named_parameters():
        frozen = masks[name] == 0
        # exact: a masked weight's gradient is 0, so Adam's step on it is 0 / (0 + eps) = 0 and p - 0 == p
        assert torch.equal(p.detach()[frozen], original[name][frozen]), name
        moved += int((p.detach() != original[name])[~frozen].sum())
    assert moved > 0.5 * kept


def test_salun_mask_keeps_the_most_salient_weights() -> None:
    """A global ranking, largest first (SalUn's public code keeps the smallest: not copied)."""
    method = SalUn(SalUn.Options(threshold=0.25))
    saliency = [torch.tensor([[0.1, 5.0], [0.2, 0.3]]), torch.tensor([4.0, 0.0, 0.05, 0.4])]
    masks = method.make_mask(saliency)
    assert masks[0].tolist() == [[False, True], [False, False]]
    assert masks[1].tolist() == [True, False, False, False]


def test_blindspot_proxy_is_fresh_and_never_sees_the_forget_set(trained, monkeypatch: pytest.MonkeyPatch) -> None:
    split = tiny_split()
    forget_ids = set(split.forget.ids)
    trained_on: list[set[str]] = []
    original_train = unlearnctl.train_model

    def spy_train(data, *args, **kwargs):
        trained_on.append(set(data.ids))
        return original_train(data, *args, **kwargs)

    # the built-ins import `train_model` from `unlearnctl` when they run (not at import: start-up stays light)
    monkeypatch.setattr(unlearnctl, "train_model", spy_train)
    proxies = []
    method = make_method("blindspot", steps=25, lr=1e-3, ema_decay=0.0, proxy_steps=40)
    original_proxy = method.train_proxy
    method.train_proxy = lambda run: proxies.append(original_proxy(run)) or proxies[-1]

    start = {n: p.detach().clone() for n, p in trained.unet.named_parameters()}
    x0 = torch.stack([split.forget[i][0] for i in range(len(split.forget))])
    x_t, t, _ = fixed_draws(trained, x0)
    c_f = torch.full((len(x0),), FORGET)

    def distance_to_proxy() -> float:
        with torch.no_grad():
            return mse_loss(predict_noise(trained.unet.eval(), x_t, t, c_f), predict_noise(proxy, x_t, t, c_f)).item()

    run = UnlearnRun(trained, split, seed=0, total_steps=method.options.steps)
    proxy = original_proxy(run)  # the proxy the method will build (same seed: same draws)
    before = distance_to_proxy()
    run_method("blindspot", model=trained, split=split, method=method)
    (used,) = proxies
    assert used is not trained.unet and not used.training
    assert state_sha256(used) == state_sha256(proxy)  # exact: the same call, seed and thread count
    assert all(not torch.equal(p, start[n]) for n, p in used.named_parameters() if p.numel() > 8)  # fresh init
    assert trained_on and all(ids.isdisjoint(forget_ids) and ids == set(split.remain.ids) for ids in trained_on)
    assert distance_to_proxy() < 0.5 * before


def test_selective_amnesia_fisher_is_nonnegative(trained) -> None:
    split = tiny_split()
    method = make_method("selective-amnesia")
    run = UnlearnRun(trained, split, seed=0, total_steps=1)
    params = list(trained.unet.parameters())
    images, labels = method.generate(run, [0, 1, 2])
    assert images.shape == (12, 1, 8, 8) and labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    fisher = method.fisher(run, params, images[:3], labels[:3])
    assert all(torch.isfinite(f).all() and (f >= 0).all() for f in fisher)
    assert sum(int((f > 0).sum()) for f in fisher) > 0.5 * sum(f.numel() for f in fisher)


def test_selective_amnesia_ewc_pulls_toward_the_original_weights(trained) -> None:
    split = tiny_split()
    theta_star = [p.detach().clone() for p in trained.unet.parameters()]
    # the Fisher of the original model, as the method computes it: the metric to measure distance in
    probe = make_method("selective-amnesia")
    run = UnlearnRun(copy.deepcopy(trained), split, seed=0, total_steps=1)
    images, labels = probe.generate(run, [0, 1, 2])
    fisher = probe.fisher(run, list(run.model.unet.parameters()), images, labels)

    def distance_after(lam: float) -> float:
        model = copy.deepcopy(trained)
        run_method("selective-amnesia", model=model, split=split, steps=15, lr=1e-3, ema_decay=0.0, **{"lambda": lam})
        with torch.no_grad():
            return float(SelectiveAmnesia.ewc(list(model.unet.parameters()), theta_star, fisher))

    free, anchored = distance_after(0.0), distance_after(1e3)
    assert anchored < 0.5 * free


def test_selective_amnesia_needs_whole_classes() -> None:
    data = tiny_image_set()
    split = split_forget(data, set(data.ids[:3]))  # three images of three classes: no class is gone
    with pytest.raises(UsageError, match="whole classes"):
        make_method("selective-amnesia").check(tiny_model(), split)


def test_retrain_never_sees_the_forget_set_and_is_unlearnctl_train(monkeypatch: pytest.MonkeyPatch) -> None:
    split = tiny_split()
    seen: list[set[str]] = []
    original_train = unlearnctl.train_model

    def spy(data, *args, **kwargs):
        seen.append(set(data.ids))
        return original_train(data, *args, **kwargs)

    monkeypatch.setattr(unlearnctl, "train_model", spy)  # imported from `unlearnctl` when retrain runs
    model = tiny_model()
    input_sha = state_sha256(model.unet)
    run = run_method("retrain", model=model, split=split, seed=4, steps=12)
    assert seen == [set(split.remain.ids)] and seen[0].isdisjoint(split.forget.ids)
    assert run.optimizer_steps == 12 and run.finish() == "ema"
    # the same weights as training from scratch on D_r with the same recipe and seed (`unlearnctl train`):
    # exact, retrain calls this very train_model (same ops, same thread count)
    options = TrainOptions(**method_class("retrain").Options(steps=12, batch_size=8, warmup_steps=2).model_dump(),
                           arch="tiny", grid_per_class=0)  # fmt: skip
    reference = original_train(split.remain, options, seed=4, class_names=["0", "1", "2"])
    assert state_sha256(model.unet) == state_sha256(reference.model.unet) != input_sha


def test_retrain_refuses_an_architecture_train_cannot_build() -> None:
    from diffusers import UNet2DModel

    model = tiny_model()
    model.unet = UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4, num_class_embeds=4,
    )  # fmt: skip
    with pytest.raises(UsageError, match="architecture"):
        make_method("retrain").check(model, tiny_split())


# --- through the command line ---------------------------------------------------------------------


@pytest.fixture
def tiny_plugin(fake_plugins):
    fake_plugins.add("tiny", "from tiny_plugin import register_datasets, register_models")


def test_cli_salun_run_folder_holds_the_mask(cli, tiny_plugin, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["--set", "steps=2", "--set", "remain_batch_size=8", "--set", "forget_batch_size=8"]
    result = cli("forget", "--model", "tiny-cond", "--classes", "1", "--method", "salun", "--out", out,
                 "--grid-per-class", "0", *args)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / MASK_FILE).is_file() and (out / "manifest.json").is_file()


def test_cli_retrain_records_its_training_steps(cli, tiny_plugin, tmp_path: Path) -> None:
    from unlearnctl.manifest import read_manifest

    out = tmp_path / "run"
    result = cli("forget", "--model", "tiny-cond", "--classes", "1", "--method", "retrain", "--steps", "6",
                 "--set", "batch_size=8", "--set", "warmup_steps=1", "--set", "log_every=2",
                 "--out", out, "--grid-per-class", "0")  # fmt: skip
    assert result.exit_code == 0, result.output
    m = read_manifest(out)
    assert m.optimizer_steps == 6 and m.weights.saved_weights == "ema" and m.method.name == "retrain"
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [2, 4, 6]


def test_cli_refuses_a_conditional_only_baseline_on_an_unconditional_model(cli, tiny_plugin, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = cli("forget", "--model", "tiny-uncond", "--classes", "1", "--method", "random-label", "--out", out)
    assert result.exit_code == 2 and "class-conditional" in result.output
    assert not out.exists()
