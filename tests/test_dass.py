"""DASS encoder: exact sizes, shapes for any length, scan ordering, init, and checkpoint loading."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
import torch.nn.functional as F

from sslalm.models.dass import (
    DASSCheckpointError,
    DASSConfig,
    DASSModel,
    convert_to_native,
    infer_config,
)
from sslalm.ops import selective_scan_ref


def _meta_model(config: DASSConfig) -> DASSModel:
    with torch.device("meta"):
        return DASSModel(config)


def _tiny(**kw) -> DASSModel:
    return DASSModel(DASSConfig.tiny(**kw)).eval()


# ---------------------------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("preset", "total", "n_tensors"),
    [(DASSConfig.small, 29_884_463, 276), (DASSConfig.medium, 48_648_239, 492)],
)
def test_parameter_counts_match_release(preset, total, n_tensors):
    model = _meta_model(preset())
    assert model.num_parameters() == total
    head = sum(p.numel() for p in model.classifier.head.parameters())
    assert head == 768 * 527 + 527
    assert len(model.state_dict()) == n_tensors
    assert model.hidden_size == 768 == model.config.hidden_size


def test_small_key_layout_is_the_original_one():
    shapes = {k: tuple(v.shape) for k, v in _meta_model(DASSConfig.small()).state_dict().items()}
    block = "layers.0.blocks.0."
    expected = {
        "patch_embed.0.weight": (48, 1, 3, 3),
        "patch_embed.2.weight": (48,),
        "patch_embed.5.weight": (96, 48, 3, 3),
        "patch_embed.7.bias": (96,),
        block + "norm.weight": (96,),
        block + "op.in_proj.weight": (96, 96),
        block + "op.conv2d.weight": (96, 1, 3, 3),
        block + "op.x_proj_weight": (4, 8, 96),
        block + "op.dt_projs_weight": (4, 96, 6),
        block + "op.dt_projs_bias": (4, 96),
        block + "op.A_logs": (384, 1),
        block + "op.Ds": (384,),
        block + "op.out_norm.weight": (96,),
        block + "op.out_proj.weight": (96, 96),
        block + "mlp.fc1.weight": (384, 96),
        block + "mlp.fc2.bias": (96,),
        "layers.2.blocks.7.op.dt_projs_weight": (4, 384, 24),
        "layers.3.blocks.1.op.x_proj_weight": (4, 50, 768),
        "layers.0.downsample.1.weight": (192, 96, 3, 3),
        "layers.2.downsample.3.weight": (768,),
        "classifier.norm.weight": (768,),
        "classifier.head.weight": (527, 768),
    }
    for key, shape in expected.items():
        assert shapes[key] == shape, key
    assert "layers.3.downsample.1.weight" not in shapes
    assert "op.conv2d.bias" not in "".join(shapes)
    assert not any("in_proj.bias" in k or "out_proj.bias" in k for k in shapes)


# --------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("n", [1, 2, 3, 31, 32, 33, 63, 64, 65, 127, 128, 999, 1000, 1023, 1024, 1025, 6000])
def test_output_size_is_five_halvings(n):
    size = n
    for _ in range(5):
        size = math.floor((size - 1) / 2) + 1
    assert DASSModel.output_size(n) == size == math.ceil(n / 32)


def test_output_size_known_values():
    assert [DASSModel.output_size(t) for t in (1024, 2048, 3000, 5000)] == [32, 64, 94, 157]
    assert DASSModel.output_size(128) == 4


@pytest.mark.parametrize("frames", [64, 97, 130, 255])
def test_forward_shapes_for_any_length(frames):
    model = _tiny()
    fbank = torch.randn(2, frames, 128)
    with torch.no_grad():
        feats = model.forward_features(fbank)
        raw = model.forward_features(fbank, apply_norm=False)
        logits = model(fbank)
    assert feats.shape == (2, 64, 4, math.ceil(frames / 32))
    assert raw.shape == feats.shape
    torch.testing.assert_close(feats, model.classifier.norm(raw.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
    assert logits.shape == (2, 10)
    torch.testing.assert_close(logits, model.classifier.head(feats.mean(dim=(2, 3))))
    assert torch.isfinite(logits).all()


def test_batch_items_are_independent():
    model = _tiny()
    fbank = torch.randn(3, 96, 128)
    with torch.no_grad():
        together = model(fbank)
        alone = model(fbank[1:2])
    torch.testing.assert_close(together[1:2], alone, atol=1e-5, rtol=1e-4)


def test_sixty_seconds_runs():
    model = _tiny()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 6000, 128))
    assert feats.shape == (1, 64, 4, 188)
    assert torch.isfinite(feats).all()


def test_wrong_input_layout_is_rejected():
    model = _tiny()
    with pytest.raises(ValueError, match=r"\(batch, frames, 128\)"):
        model(torch.randn(1, 128, 200))
    with pytest.raises(ValueError, match="fbank"):
        model(torch.randn(200, 128))


# ------------------------------------------------------------------------------------------- the scan


def _naive_scan_2d(op, x: torch.Tensor) -> torch.Tensor:
    """Four-direction scan with explicit (h, w) visiting orders and the sequential reference scan."""
    b, d, h, w = x.shape
    rows = [(i, j) for i in range(h) for j in range(w)]
    cols = [(i, j) for j in range(w) for i in range(h)]
    orders = [rows, cols, rows[::-1], cols[::-1]]
    r, n = op.dt_rank, op.d_state
    out = torch.zeros(b, d, h, w)
    for k, order in enumerate(orders):
        seq = torch.stack([x[:, :, i, j] for i, j in order], dim=-1)  # (B, D, L)
        proj = torch.einsum("cd,bdl->bcl", op.x_proj_weight[k], seq)
        dt_low, B, C = proj[:, :r], proj[:, r : r + n], proj[:, r + n :]
        dt = torch.einsum("dr,brl->bdl", op.dt_projs_weight[k], dt_low)
        sl = slice(k * d, (k + 1) * d)
        y = selective_scan_ref(
            seq, dt, -torch.exp(op.A_logs[sl]), B, C, D=op.Ds[sl],
            delta_bias=op.dt_projs_bias[k], delta_softplus=True,
        )  # fmt: skip
        for pos, (i, j) in enumerate(order):
            out[:, :, i, j] += y[:, :, pos]
    return out


@pytest.mark.parametrize("layout", ["time", "channel"])
@pytest.mark.parametrize("shape", [(2, 8, 3, 5), (1, 8, 4, 4), (1, 8, 1, 7)])
def test_cross_scan_matches_explicit_visiting_orders(shape, layout):
    model = _tiny(scan_layout=layout)
    op = model.layers[0].blocks[0].op
    with torch.no_grad():
        op.A_logs.normal_(0, 0.5)  # make direction and order matter
        op.Ds.normal_()
        x = torch.randn(shape)
        merged = op.scan_2d(x).permute(0, 3, 1, 2)  # channel-last -> (B, D, H, W)
        torch.testing.assert_close(merged, _naive_scan_2d(op, x), atol=1e-5, rtol=1e-4)


def test_auto_scan_matches_reference_scan():
    fast = _tiny(scan_method="auto")
    slow = _tiny(scan_method="ref")
    slow.load_state_dict(fast.state_dict())
    fbank = torch.randn(2, 100, 128)
    with torch.no_grad():
        a, b = fast.forward_features(fbank), slow.forward_features(fbank)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("layout", ["time", "channel"])
@pytest.mark.parametrize("grad", [False, True])
def test_direction_by_direction_scan_matches_grouped_scan(grad, layout):
    grouped = _tiny(grouped_scan_max_elements=1 << 40, scan_layout="channel")
    by_direction = _tiny(grouped_scan_max_elements=0, scan_layout=layout)
    by_direction.load_state_dict(grouped.state_dict())
    fbank = torch.randn(2, 100, 128, requires_grad=grad)
    with torch.set_grad_enabled(grad):
        a, b = grouped.forward_features(fbank), by_direction.forward_features(fbank)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        if grad:  # the input's gradient through both paths
            weights = torch.linspace(-1, 1, a.numel()).view_as(a)
            ga = torch.autograd.grad((a * weights).sum(), fbank)[0]
            gb = torch.autograd.grad((b * weights).sum(), fbank)[0]
            torch.testing.assert_close(ga, gb, atol=1e-4, rtol=1e-3)
    assert DASSConfig.small().grouped_scan_max_elements < 96 * 32 * 1500  # a 60 s clip's first stage


@pytest.mark.parametrize("method", ["auto", "ref"])
def test_time_major_layout_matches_channel_major_with_gradients(method):
    """The CPU layout (time-major inputs, block-diagonal projections) against the GPU one, in training."""
    time_major, channel_major = (
        _tiny(scan_layout=layout, scan_method=method, drop_path_rate=0.0) for layout in ("time", "channel")
    )
    with torch.no_grad():  # decays and skips away from their init, so that every direction matters
        for name, p in time_major.named_parameters():
            if name.endswith(("A_logs", "Ds")):
                p.normal_(0, 0.5)
    channel_major.load_state_dict(time_major.state_dict())
    fbank = torch.randn(3, 90, 128)
    outs, grads = [], []
    for model in (time_major, channel_major):
        x = fbank.clone().requires_grad_(True)
        out = model.forward_features(x)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outs.append(out.detach())
        grads.append([x.grad, *(p.grad for p in model.parameters())])
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-4)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


def test_scan_layout_is_checked():
    with pytest.raises(ValueError, match="scan_layout"):
        DASSConfig.tiny(scan_layout="diagonal")


def test_backward_reaches_every_parameter():
    model = DASSModel(DASSConfig.tiny(drop_path_rate=0.0)).train()
    model(torch.randn(2, 64, 128)).logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_gradient_checkpointing_gives_same_gradients():
    model = DASSModel(DASSConfig.tiny(drop_path_rate=0.0)).train()
    fbank = torch.randn(1, 64, 128)
    model(fbank).sum().backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.gradient_checkpointing = True
    model(fbank).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, plain[n], atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------- init and dropout


def test_v0_init():
    model = DASSModel(DASSConfig.tiny())
    for block in (model.layers[0].blocks[0], model.layers[3].blocks[0]):
        op = block.op
        assert torch.equal(op.A_logs, torch.zeros_like(op.A_logs))  # A = -1 with d_state 1
        assert torch.equal(op.Ds, torch.ones_like(op.Ds))
        dt = F.softplus(op.dt_projs_bias)
        assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
        assert op.dt_projs_weight.abs().max() <= op.dt_rank**-0.5
        assert op.x_proj_weight.abs().max() <= op.d_inner**-0.5
        assert op.in_proj.weight.std() < 0.03  # trunc_normal(0.02)
        assert torch.equal(block.norm.weight, torch.ones_like(block.norm.weight))
    assert torch.equal(model.classifier.head.bias, torch.zeros_like(model.classifier.head.bias))


def test_drop_path_rates_and_training_only():
    model = DASSModel(DASSConfig.tiny(drop_path_rate=0.9))
    rates = [b.drop_path.p for layer in model.layers for b in layer.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.9) and rates == sorted(rates)
    assert _meta_model(DASSConfig.small()).layers[3].blocks[1].drop_path.p == pytest.approx(0.2)
    fbank = torch.randn(4, 64, 128)
    with torch.no_grad():
        model.train()
        a, b = model(fbank), model(fbank)
        assert not torch.allclose(a, b)
        model.eval()
        torch.testing.assert_close(model(fbank), model(fbank))


def test_config_roundtrip_and_presets():
    for config in (DASSConfig.small(), DASSConfig.medium(), DASSConfig.tiny(dims=[8, 16, 32, 48])):
        data = config.to_dict()
        assert data["model_type"] == "dass"
        assert DASSConfig.from_dict(data) == config
        assert DASSConfig.from_dict(__import__("json").loads(config.to_json_string())) == config
    assert DASSConfig.tiny(dims=[8, 16, 32, 48]).hidden_size == 48
    assert DASSConfig.medium().depths == [2, 2, 20, 2] and DASSConfig.medium().drop_path_rate == 0.3
    with pytest.raises(ValueError, match="unknown"):
        DASSConfig.from_dict({"depth": [1]})


# ---------------------------------------------------------------------------------------- checkpoints


def _to_hf_layout(native: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our layout -> the transformers-DASS port's (its converter's renames, its module shapes)."""
    embed = {"0": "0", "2": "1", "5": "3", "7": "4"}
    out = {}
    for key, value in native.items():
        if key.startswith("classifier.head."):
            new = key[len("classifier.") :]
        elif key.startswith("classifier.norm."):
            new = "dass." + key[len("classifier.") :]
        elif key.startswith("patch_embed."):
            idx, rest = key[len("patch_embed.") :].split(".", 1)
            new = f"dass.patch_embeddings.projection.{embed[idx]}.{rest}"
        else:
            new = "dass." + key.replace("downsample.1.", "downsample.down.").replace(
                "downsample.3.", "downsample.norm."
            )
        if new.endswith("op.x_proj_weight"):
            new, value = new.replace("x_proj_weight", "x_proj.weight"), value.reshape(-1, value.shape[-1])
        elif new.endswith("op.dt_projs_weight"):
            new, value = new.replace("dt_projs_weight", "dt_projs.weight"), value.reshape(-1, value.shape[-1])
        out[new] = value
    return out


def _reference_and_input(**kw):
    model = _tiny(**kw)
    with torch.no_grad():  # non-default values everywhere, so a mis-mapped tensor shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model, torch.randn(2, 80, 128)


def _assert_same_outputs(a: DASSModel, b: DASSModel, fbank: torch.Tensor) -> None:
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(fbank), b.eval()(fbank), atol=0, rtol=0)
        torch.testing.assert_close(a.forward_features(fbank), b.forward_features(fbank), atol=0, rtol=0)


def test_load_original_release_layout(tmp_path):
    model, fbank = _reference_and_input()
    path = tmp_path / "DASS_tiny.pth"
    torch.save({"module.v." + k: v for k, v in model.state_dict().items()}, path)
    loaded = DASSModel.from_checkpoint(path)  # architecture inferred from the keys
    assert not loaded.training
    assert loaded.config.depths == model.config.depths and loaded.config.dims == model.config.dims
    assert loaded.config.num_classes == 10
    _assert_same_outputs(model, loaded, fbank)
    _assert_same_outputs(model, DASSModel.from_checkpoint(path, config=model.config), fbank)


@pytest.mark.parametrize("fmt", ["safetensors", "bin", "folder"])
def test_load_hf_port_layout(tmp_path, fmt):
    from safetensors.torch import save_file

    model, fbank = _reference_and_input()
    hf = {k: v.contiguous() for k, v in _to_hf_layout(model.state_dict()).items()}
    assert "dass.layers.0.blocks.0.op.x_proj.weight" in hf and "head.weight" in hf
    if fmt == "bin":
        path = tmp_path / "pytorch_model.bin"
        torch.save(hf, path)
    else:
        path = tmp_path / "model.safetensors"
        save_file(hf, str(path))
    loaded = DASSModel.from_checkpoint(tmp_path if fmt == "folder" else path)
    _assert_same_outputs(model, loaded, fbank)


@pytest.mark.parametrize(("preset", "name"), [(DASSConfig.small, "small"), (DASSConfig.medium, "medium")])
def test_real_size_key_mapping_on_meta(preset, name):
    native = _meta_model(preset()).state_dict()
    hf = _to_hf_layout(native)
    d = "dass.layers.0.blocks.0.op."
    assert tuple(hf[d + "x_proj.weight"].shape) == (32, 96)  # K*(R+2N), D
    assert tuple(hf[d + "dt_projs.weight"].shape) == (384, 6)  # K*D, R
    assert tuple(hf["dass.layers.2.downsample.down.weight"].shape) == (768, 384, 3, 3)
    assert tuple(hf["dass.patch_embeddings.projection.4.weight"].shape) == (96,)
    assert tuple(hf["dass.norm.weight"].shape) == (768,) and tuple(hf["head.weight"].shape) == (527, 768)
    original = {"module.v." + k: v for k, v in native.items()}
    for layout in (hf, original):
        mapped = convert_to_native(layout)
        assert {k: v.shape for k, v in mapped.items()} == {k: v.shape for k, v in native.items()}
        inferred = infer_config(mapped)
        assert inferred == preset(), name


def test_mismatch_names_missing_and_unexpected_keys(tmp_path):
    model, _ = _reference_and_input()
    state = {"module.v." + k: v for k, v in model.state_dict().items()}
    del state["module.v.layers.1.blocks.0.op.Ds"]
    state["module.v.layers.1.blocks.0.op.Bogus"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(DASSCheckpointError) as err:
        DASSModel.from_checkpoint(path, config=model.config)
    message = str(err.value)
    assert "missing keys: layers.1.blocks.0.op.Ds" in message
    assert "unexpected keys: layers.1.blocks.0.op.Bogus" in message


def test_shape_mismatch_and_wrong_size_are_errors(tmp_path):
    model, _ = _reference_and_input()
    path = tmp_path / "tiny.pth"
    torch.save({"module.v." + k: v for k, v in model.state_dict().items()}, path)
    mismatch = r"classifier\.head\.weight: file \(10, 64\) vs model \(527, 64\)"
    with pytest.raises(DASSCheckpointError, match=mismatch):
        DASSModel.from_checkpoint(path, config=DASSConfig.tiny(num_classes=527))
    with pytest.raises(DASSCheckpointError, match=r"missing keys: .*\(\d+ in all\)"):
        DASSModel.from_checkpoint(path, config=DASSConfig.tiny(depths=[2, 2, 2, 2]))
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(DASSCheckpointError, match="cannot infer"):
        DASSModel.from_checkpoint(tmp_path / "other.pth")


def test_encoder_only_file_needs_strict_false(tmp_path):
    model, fbank = _reference_and_input()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.head.")}
    path = tmp_path / "encoder.pth"
    torch.save(state, path)
    with pytest.raises(DASSCheckpointError, match="classifier.head.weight"):
        DASSModel.from_checkpoint(path, config=model.config)
    loaded = DASSModel.from_checkpoint(path, config=model.config, strict=False).eval()
    with torch.no_grad():
        a, b = loaded.forward_features(fbank), model.forward_features(fbank)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


class _NotATensor:
    pass


def test_loading_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"module.v.x": _NotATensor()}, path)
    with pytest.raises(pickle.UnpicklingError):
        DASSModel.from_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        DASSModel.from_checkpoint(tmp_path / "absent.pth")


# ------------------------------------------------------------------------------------------ benchmark


def test_encoder_benchmark_smoke():
    import argparse

    from sslalm.bench import encoder

    assert encoder._ast_tokens(1024) == 12 * 101 + 2  # AST's 1214 tokens per 10.24 s
    assert encoder._ast_macs(60000) > 50 * encoder._ast_macs(6000)  # quadratic attention dominates
    parser = argparse.ArgumentParser()
    encoder.add_arguments(parser)
    args = parser.parse_args(["--durations", "0.7", "--skip-ast", "--threads", "1"])
    result = encoder.run(args)
    case, torch_case = result["cases"]  # the kernels auto picks, then numba switched off
    assert case["model"] == "DASS-small" and torch_case["model"] == "DASS-small torch"
    for c in (case, torch_case):
        assert c["status"] == "ok" and c["output"] == [1, 768, 4, 3]
        assert c["cpu_s"] > 0 and c["peak_rss_mb"] >= c["model_rss_mb"] > 0


def test_encoder_train_benchmark_compares_both_layouts():
    import argparse

    from sslalm.bench import encoder_train

    parser = argparse.ArgumentParser()
    encoder_train.add_arguments(parser)
    args = parser.parse_args(["--size", "small", "--batch", "2", "--frames", "64", "--threads", "1",
                              "--repeats", "1", "--rounds", "2"])  # fmt: skip
    result = encoder_train.run(args)
    assert [c["layout"] for c in result["cases"]] == ["channel", "time"]
    assert result["cases"][0]["relative"] == 1.0
    for case in result["cases"]:
        assert case["step_s"] >= case["min_step_s"] > 0
    assert result["max_feature_diff"] < 1e-4  # the same weights and input give the same features
    with pytest.raises(SystemExit, match="--rounds"):
        encoder_train.run(parser.parse_args(["--rounds", "0"]))
