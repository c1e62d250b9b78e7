"""RobustBench by name, other import routes, normalisation, names and uploads.

RobustBench files are made here from our own architectures (tiny WideResNets etc.) in RobustBench's
cache layout and container conventions; that our architectures reproduce RobustBench's own
networks for the real zoo entries is what ``bench/robustbench_coverage.py`` checks against
RobustBench's code. Downloads go to a local HTTP server on 127.0.0.1 only.
"""
from __future__ import annotations

import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from engine.checkpoints import importers
from engine.checkpoints import robustbench as rb
from engine.checkpoints.importers import Normalization, parse_normalization, resolve_arch
from engine.cli import main
from engine.errors import CheckpointError, InvalidParameterError
from engine.models import build_model

LEADERBOARD = {"clean_acc": 0.9, "autoattack_acc": 0.5, "eps": 8 / 255, "eps_text": "8/255", "norm": "linf",
               "from": "test table"}
WRN = {"depth": 10, "widen_factor": 1, "sub_block1": True}
TINY = {
    "Tiny2024Wrn": rb.ZooEntry("Tiny2024Wrn", "cifar10", "Linf", "wide_resnet", WRN, 10,
                               files=({"gdrive_id": "tiny-id"},), robustbench_model="WideResNet(10, 1)",
                               leaderboard=LEADERBOARD),
    "Tiny2024Mu": rb.ZooEntry("Tiny2024Mu", "cifar10", "L2", "wide_resnet", {**WRN, "sub_block1": False}, 10,
                              normalization=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), files=({"gdrive_id": "mu"},)),
    "Tiny2024Last": rb.ZooEntry("Tiny2024Last", "cifar10", "corruptions", "wide_resnet", WRN, 10,
                                files=({"gdrive_id": "last"},), checkpoint_key="last"),
    "Tiny2024DM": rb.ZooEntry("Tiny2024DM", "cifar100", "Linf", "dm_wide_resnet",
                              {"depth": 10, "width": 1, "activation": "swish"}, 100,
                              normalization=((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
                              files=({"gdrive_id": "dm"},)),
}


@pytest.fixture
def zoo(monkeypatch):
    """The real table plus the tiny entries above."""
    source, entries = rb._table()
    monkeypatch.setattr(rb, "_table", lambda: (source, entries + tuple(TINY.values())))
    return TINY


def tiny_net(entry: rb.ZooEntry, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(entry.arch, entry.num_classes, entry.input_shape, [0.0] * 3, [1.0] * 3, **entry.arch_kwargs)
    for module in model.modules():  # non-trivial BatchNorm statistics: swapped keys would show
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model.net.eval()


def save_rb(root: Path, entry: rb.ZooEntry, contents) -> Path:
    path = root / entry.dataset / entry.threat / f"{entry.name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(contents, path)
    return path


def images(n=3, size=32):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(5))


# ---------------------------------------------------------------------------------------------
# the table


def test_table_figures_match_the_leaderboard_as_published():
    """Figures the RobustBench leaderboard prints (../shared/docs/ECOSYSTEM.md), as fractions."""
    expected = {
        ("cifar10", "Linf", "Standard"): (0.9478, 0.0),
        ("cifar10", "Linf", "Wong2020Fast"): (0.8334, 0.4321),
        ("cifar10", "Linf", "Engstrom2019Robustness"): (0.8703, 0.4925),
        ("cifar10", "Linf", "Carmon2019Unlabeled"): (0.8969, 0.5953),
        ("cifar10", "Linf", "Gowal2021Improving_70_16_ddpm_100m"): (0.8874, 0.6611),
        ("cifar10", "Linf", "Wang2023Better_WRN-70-16"): (0.9325, 0.7069),
        ("imagenet", "Linf", "Standard_R50"): (0.7652, 0.0),
        ("imagenet", "Linf", "Engstrom2019Robustness"): (0.6256, 0.2922),
        ("imagenet", "Linf", "Salman2020Do_R50"): (0.6402, 0.3496),
    }
    for (dataset, threat, name), (clean, aa) in expected.items():
        board = rb.get_entry(name, dataset, threat).leaderboard
        assert board["clean_acc"] == pytest.approx(clean) and board["autoattack_acc"] == pytest.approx(aa), name
        assert board["from"].startswith("RobustBench model_info/")


def test_table_architectures_of_known_entries():
    carmon = rb.get_entry("Carmon2019Unlabeled")
    assert (carmon.arch, carmon.arch_kwargs, carmon.normalization) == (
        "wide_resnet", {"depth": 28, "widen_factor": 10, "sub_block1": True}, None)
    gowal = rb.get_entry("Gowal2021Improving_70_16_ddpm_100m")
    assert gowal.arch == "dm_wide_resnet" and gowal.arch_kwargs["depth"] == 70 and gowal.arch_kwargs["width"] == 16
    assert gowal.normalization[0] == pytest.approx((0.4914, 0.4822, 0.4465))
    wong = rb.get_entry("Wong2020Fast", "imagenet", "Linf")
    assert wong.arch == "torchvision:resnet50" and wong.input_size == 288 and wong.preprocessing["name"] == "Crop288"
    assert rb.get_entry("Andriushchenko2020Understanding").checkpoint_key == "last"


def test_every_loadable_entry_names_a_registered_architecture():
    entries = rb.zoo_entries(supported_only=True)
    assert len(entries) > 100
    assert all(rb.arch_available(e.arch) or e.arch.startswith("timm:") for e in entries)
    for dataset, threat in (("cifar10", "Linf"), ("cifar10", "L2"), ("cifar100", "Linf"), ("imagenet", "Linf")):
        assert rb.zoo_entries(dataset, threat, supported_only=True)


def test_unknown_names_are_refused_with_suggestions():
    with pytest.raises(InvalidParameterError, match="Did you mean Carmon2019Unlabeled"):
        rb.get_entry("Carmon2019Unlabelled")
    with pytest.raises(InvalidParameterError, match="exists for cifar10/Linf"):
        rb.get_entry("Carmon2019Unlabeled", "cifar100", "Linf")
    with pytest.raises(InvalidParameterError, match="threat model"):
        rb.get_entry("Carmon2019Unlabeled", "cifar10", "Linfinity")
    assert rb.get_entry("Carmon2019Unlabeled", "cifar10", "linf").threat == "Linf"


def test_unsupported_entries_say_why(tmp_path):
    with pytest.raises(CheckpointError, match="ensemble"):
        rb.load_robustbench("Chen2020Adversarial", model_dir=tmp_path, download=False)
    with pytest.raises(CheckpointError, match="normalises features"):
        rb.load_robustbench("Pang2020Boosting", model_dir=tmp_path, download=False)


# ---------------------------------------------------------------------------------------------
# loading from RobustBench's cache layout


def test_cache_layout_file_loads_with_identical_logits(zoo, tmp_path):
    entry = zoo["Tiny2024Wrn"]
    net = tiny_net(entry)
    save_rb(tmp_path / "models", entry, {"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}})
    loaded = rb.load_robustbench("Tiny2024Wrn", "cifar10", "Linf", tmp_path / "models", download=False)
    x = images()
    with torch.no_grad():
        assert torch.equal(loaded.model(x), net(x))
    card = loaded.card.to_dict()
    assert card["mean"] == [0.0] * 3 and card["std"] == [1.0] * 3  # this entry takes raw [0, 1] images
    assert card["source"]["leaderboard"] == LEADERBOARD
    assert card["source"]["robustbench"]["name"] == "Tiny2024Wrn"
    assert not card["metrics"] or card["metrics"].get("clean_acc") is None  # ours stay empty until measured
    assert card["training"]["norm"] == "linf" and card["training"]["eps"] == pytest.approx(8 / 255)


def test_model_prefix_and_mu_sigma_in_the_file_win_over_the_table(zoo, tmp_path):
    entry = zoo["Tiny2024Mu"]
    net = tiny_net(entry)
    mu, sigma = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1), torch.tensor([0.2, 0.3, 0.4]).view(1, 3, 1, 1)
    save_rb(tmp_path, entry, {**{f"model.{k}": v for k, v in net.state_dict().items()}, "mu": mu, "sigma": sigma})
    loaded = rb.load_robustbench("Tiny2024Mu", "cifar10", "L2", tmp_path, download=False)
    x = images()
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), net((x - mu) / sigma), atol=1e-6)
    assert loaded.card.to_dict()["source"]["normalization"] == "file"
    explicit = rb.load_robustbench("Tiny2024Mu", "cifar10", "L2", tmp_path, download=False, normalization="none")
    with torch.no_grad():
        assert torch.allclose(explicit.model(x), net(x), atol=1e-6)


def test_table_normalisation_when_the_file_has_none(zoo, tmp_path):
    entry = zoo["Tiny2024DM"]
    net = tiny_net(entry)
    save_rb(tmp_path, entry, net.state_dict())
    loaded = rb.load_robustbench("Tiny2024DM", "cifar100", "Linf", tmp_path, download=False)
    mean = torch.tensor(entry.normalization[0]).view(1, 3, 1, 1)
    std = torch.tensor(entry.normalization[1]).view(1, 3, 1, 1)
    x = images()
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), net((x - mean) / std), atol=1e-5)
    assert loaded.card.to_dict()["num_classes"] == 100 and loaded.card.to_dict()["dataset"] == "cifar100"


def test_checkpoint_key_last_is_what_robustbench_reads(zoo, tmp_path):
    entry = zoo["Tiny2024Last"]
    last, best = tiny_net(entry, seed=1), tiny_net(entry, seed=2)
    save_rb(tmp_path, entry, {"last": last.state_dict(), "best": best.state_dict()})
    loaded = rb.load_robustbench("Tiny2024Last", "cifar10", "corruptions", tmp_path, download=False)
    x = images()
    with torch.no_grad():
        assert torch.equal(loaded.model(x), last(x)) and not torch.equal(loaded.model(x), best(x))


def test_a_file_of_another_architecture_names_the_keys(zoo, tmp_path):
    other = build_model("wide_resnet", 10, (3, 32, 32), [0.0] * 3, [1.0] * 3, depth=16, widen_factor=1).net
    save_rb(tmp_path, zoo["Tiny2024Wrn"], other.state_dict())
    with pytest.raises(CheckpointError, match="missing keys|unexpected keys|shape"):
        rb.load_robustbench("Tiny2024Wrn", model_dir=tmp_path, download=False)


class _Trap:
    """Unpickling this runs ``Path.touch(marker)``: proof of whether code from a file ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_file_with_code_in_it_is_refused_and_nothing_runs(zoo, tmp_path):
    from engine.errors import UnsafeCheckpointError

    marker = tmp_path / "ran"
    entry = zoo["Tiny2024Wrn"]
    save_rb(tmp_path, entry, {"state_dict": tiny_net(entry).state_dict(), "args": _Trap(marker)})
    with pytest.raises(UnsafeCheckpointError):
        rb.load_robustbench("Tiny2024Wrn", model_dir=tmp_path, download=False)
    assert not marker.exists()


def test_missing_file_without_download_names_the_path(zoo, tmp_path):
    with pytest.raises(CheckpointError, match=r"cifar10/Linf/Tiny2024Wrn\.pt"):
        rb.load_robustbench("Tiny2024Wrn", model_dir=tmp_path, download=False)


# ---------------------------------------------------------------------------------------------
# downloads, against a local server


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        route = self.server.routes.get(self.path)
        self.server.seen.append((self.path, self.headers.get("Range")))
        if route is None:
            self.send_error(404)
            return
        body = route["body"]
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and route.get("ranges", True):
            start, status = int(rng.split("=")[1].split("-")[0]), 206
        payload = body[start:]
        self.send_response(status)
        self.send_header("Content-Type", route.get("type", "application/octet-stream"))
        self.send_header("Content-Length", str(len(payload)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        cut = route.get("cut")
        self.wfile.write(payload[:cut] if cut is not None else payload)
        self.wfile.flush()
        if cut is not None:
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.routes, httpd.seen = {}, []
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _checkpoint_bytes(tmp_path, entry) -> bytes:
    path = tmp_path / "made.pt"
    torch.save(tiny_net(entry).state_dict(), path)
    return path.read_bytes()


def test_missing_file_is_downloaded_into_the_cache_then_loaded(zoo, tmp_path, server):
    body = _checkpoint_bytes(tmp_path, zoo["Tiny2024Wrn"])
    server.routes["/tiny"] = {"body": body}
    seen = []
    loaded = rb.load_robustbench("Tiny2024Wrn", model_dir=tmp_path / "models", url_for=lambda spec: server.url + "/tiny",
                                 progress=lambda done, total: seen.append((done, total)))
    path = tmp_path / "models" / "cifar10" / "Linf" / "Tiny2024Wrn.pt"
    assert path.read_bytes() == body and not path.with_name(path.name + ".part").exists()
    assert seen[-1] == (len(body), len(body))
    assert loaded.card.to_dict()["source"]["sha256"] == hashlib.sha256(body).hexdigest()


def test_a_partial_download_resumes_with_a_range_request(tmp_path, server):
    body = bytes(range(256)) * 400 + b"PK"
    body = b"PK" + body
    server.routes["/f"] = {"body": body}
    dest = tmp_path / "f.pt"
    dest.with_name("f.pt.part").write_bytes(body[:1000])
    rb.download_file(server.url + "/f", dest)
    assert dest.read_bytes() == body
    assert server.seen[-1] == ("/f", "bytes=1000-")


def test_a_server_ignoring_the_range_sends_the_whole_file_again(tmp_path, server):
    body = b"PK" + bytes(5000)
    server.routes["/f"] = {"body": body, "ranges": False}
    dest = tmp_path / "f.pt"
    dest.with_name("f.pt.part").write_bytes(b"stale bytes")
    rb.download_file(server.url + "/f", dest)
    assert dest.read_bytes() == body


def test_a_broken_transfer_keeps_the_part_and_the_next_run_completes_it(tmp_path, server):
    body = b"PK" + bytes(range(256)) * 300
    server.routes["/f"] = {"body": body, "cut": 3000}
    dest = tmp_path / "f.pt"
    with pytest.raises(rb.DownloadError, match="run the command again to resume"):
        rb.download_file(server.url + "/f", dest)
    part = dest.with_name("f.pt.part")
    assert not dest.exists() and part.read_bytes() == body[:3000]
    server.routes["/f"] = {"body": body}
    rb.download_file(server.url + "/f", dest)
    assert dest.read_bytes() == body and server.seen[-1][1] == "bytes=3000-"


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/octet-stream"])
def test_an_html_page_is_never_saved_as_a_checkpoint(tmp_path, server, content_type):
    server.routes["/f"] = {"body": b"<!DOCTYPE html><html><body>Google Drive - quota exceeded</body></html>",
                           "type": content_type}
    dest = tmp_path / "f.pt"
    with pytest.raises(rb.DownloadError, match="HTML page"):
        rb.download_file(server.url + "/f", dest)
    assert not dest.exists() and not dest.with_name("f.pt.part").exists()


def test_size_and_checksum_are_checked(tmp_path, server):
    body = b"PK" + bytes(2000)
    server.routes["/f"] = {"body": body}
    with pytest.raises(rb.DownloadError, match="2002 bytes but the checkpoint has 999"):
        rb.download_file(server.url + "/f", tmp_path / "a.pt", expected_size=999)
    assert not (tmp_path / "a.pt").exists()
    with pytest.raises(rb.DownloadError, match="sha256"):
        rb.download_file(server.url + "/f", tmp_path / "b.pt", sha256="00000000")
    assert not (tmp_path / "b.pt").exists()
    good = hashlib.sha256(body).hexdigest()[:8]
    assert rb.download_file(server.url + "/f", tmp_path / "c.pt", sha256=good, expected_size=len(body)).is_file()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_offline_error_names_the_address_and_the_expected_path(zoo, tmp_path, monkeypatch, capsys):
    url = f"http://127.0.0.1:{_closed_port()}/download?id={{id}}"
    monkeypatch.setattr(rb, "GDRIVE_URL", url)
    rc = main(["import", "--robustbench", "Tiny2024Wrn", "--dataset", "cifar10", "--model-dir", str(tmp_path / "m"),
               "--out-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:")
    assert url.format(id="tiny-id") in err and str(tmp_path / "m" / "cifar10" / "Linf" / "Tiny2024Wrn.pt") in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_gdrive_url_builder():
    url = rb.gdrive_url("15tUx-gkZMYx7BfEOw1GY5OKC-jECIsPQ")
    assert url.startswith("https://") and "id=15tUx-gkZMYx7BfEOw1GY5OKC-jECIsPQ" in url
    assert "id=a%2Fb%26c" in rb.gdrive_url("a/b&c")
    assert rb.file_url({"url": "https://example.org/x.pth"}) == "https://example.org/x.pth"


# ---------------------------------------------------------------------------------------------
# the CLI: import --robustbench, names, overwrite


def test_cli_import_robustbench_saves_and_never_overwrites(zoo, tmp_path, capsys):
    net = tiny_net(zoo["Tiny2024Wrn"])
    save_rb(tmp_path / "m", zoo["Tiny2024Wrn"], net.state_dict())
    args = ["import", "--robustbench", "Tiny2024Wrn", "--dataset", "cifar10", "--model-dir", str(tmp_path / "m"),
            "--out-dir", str(tmp_path / "out"), "--no-download"]
    assert main(args) == 0
    first = Path(capsys.readouterr().out.strip())
    assert first == tmp_path / "out" / "Tiny2024Wrn.safetensors"
    card = json.loads(first.with_suffix(".json").read_text())
    assert card["source"]["leaderboard"]["autoattack_acc"] == 0.5
    assert main(args) == 0
    out = capsys.readouterr()
    assert Path(out.out.strip()).name == "Tiny2024Wrn-2.safetensors" and "already exists" in out.err
    before = first.with_suffix(".json").read_text()
    assert main(args + ["--overwrite", "--normalization", "0.5,0.5,0.5;0.5,0.5,0.5"]) == 0
    assert Path(capsys.readouterr().out.strip()) == first
    after = json.loads(first.with_suffix(".json").read_text())
    assert after["mean"] == [0.5] * 3 and before != first.with_suffix(".json").read_text()
    from engine import load

    with torch.no_grad():
        x = images()
        assert torch.allclose(load(first).model(x), net((x - 0.5) / 0.5), atol=1e-6)


@pytest.mark.parametrize("name", ["../../x", "a/b", "x\x00y", "n" * 300, ".."])
def test_cli_import_refuses_names_that_are_paths_or_unusable(tmp_path, capsys, name):
    src = tmp_path / "in.pt"
    torch.save(build_model("small_cnn", 10, (1, 28, 28), [0.5], [0.5]).net.state_dict(), src)
    out = tmp_path / "deep" / "out"
    rc = main(["import", str(src), "--arch", "small_cnn", "--dataset", "mnist", "--out-dir", str(out), "--name", name])
    assert rc == 2 and capsys.readouterr().err.startswith("error:")
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "deep" / "x.json").exists()
    assert not out.exists() or not any(out.iterdir())


def test_cli_import_file_picks_a_free_name(tmp_path, capsys):
    src = tmp_path / "model.pth.tar"
    torch.save({"state_dict": build_model("small_cnn", 10, (1, 28, 28), [0.5], [0.5]).net.state_dict()}, src)
    args = ["import", str(src), "--arch", "small_cnn", "--dataset", "mnist", "--out-dir", str(tmp_path / "o")]
    assert main(args) == 0 and Path(capsys.readouterr().out.strip()).name == "model.safetensors"
    assert main(args) == 0
    out = capsys.readouterr()
    assert Path(out.out.strip()).name == "model-2.safetensors" and "'model-2'" in out.err


def test_cli_refuses_a_bad_normalisation_before_reading_anything(tmp_path, capsys):
    rc = main(["import", str(tmp_path / "missing.pt"), "--arch", "small_cnn", "--dataset", "mnist",
               "--normalization", "0.5;0"])
    err = capsys.readouterr().err
    assert rc == 2 and "std must be > 0" in err


# ---------------------------------------------------------------------------------------------
# robustness, normalisation precedence, RobustBench-saved state dicts


def test_robustness_names_resolve_by_dataset():
    assert resolve_arch("resnet50", "cifar10", "robustness") == "cifar_resnet50"
    assert resolve_arch("ResNet18", "cifar100", "robustness") == "cifar_resnet18"
    assert resolve_arch("resnet50", "imagenet", "robustness") == "torchvision:resnet50"
    assert resolve_arch("wide_resnet50_2", "imagenet", "robustness") == "torchvision:wide_resnet50_2"
    assert resolve_arch("resnet50", "cifar10", "plain") == "resnet50"  # other formats: our own names
    assert resolve_arch("cifar_resnet50", "cifar10", "robustness") == "cifar_resnet50"
    with pytest.raises(InvalidParameterError, match="densenet121"):
        resolve_arch("densenet121", "cifar10", "robustness")
    assert resolve_arch("small_cnn", "mnist", "robustness") == "small_cnn"  # ours, named directly
    with pytest.raises(InvalidParameterError, match="nor one robustness builds for dataset 'mnist'"):
        resolve_arch("densenet121", "mnist", "robustness")


def test_robustness_best_checkpoint_imports_with_its_own_normaliser(tmp_path, capsys):
    torch.manual_seed(3)
    net = build_model("cifar_resnet18", 10, (3, 32, 32), [0.0] * 3, [1.0] * 3, wm=0.125).net.eval()
    mean, std = torch.tensor([0.4914, 0.4822, 0.4465]), torch.tensor([0.2023, 0.1994, 0.2010])
    weights = {f"module.model.{k}": v for k, v in net.state_dict().items()}
    weights.update({f"module.attacker.model.{k}": v.clone() for k, v in net.state_dict().items()})
    weights.update({"module.normalizer.new_mean": mean.view(3, 1, 1), "module.normalizer.new_std": std.view(3, 1, 1),
                    "module.attacker.normalize.new_mean": mean.view(3, 1, 1)})
    src = tmp_path / "checkpoint.pt.best"
    torch.save({"model": weights, "epoch": 150, "schedule": None}, src)
    rc = main(["import", str(src), "--format", "robustness", "--arch", "resnet18", "--dataset", "cifar10",
               "--arch-kwargs", '{"wm": 0.125}', "--out-dir", str(tmp_path / "o")])
    saved = Path(capsys.readouterr().out.strip())
    assert rc == 0 and saved.name == "checkpoint-best.safetensors"
    from engine import load

    loaded = load(saved)
    assert loaded.card.to_dict()["arch"] == "cifar_resnet18"
    x = images()
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), net((x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)), atol=1e-5)


def test_normalisation_parsing():
    n = parse_normalization("0.4914,0.4822,0.4465;0.2471,0.2435,0.2616")
    assert n.mean == (0.4914, 0.4822, 0.4465) and n.std == (0.2471, 0.2435, 0.2616) and not n.is_identity
    assert parse_normalization(" none ").values(3) == ([0.0] * 3, [1.0] * 3)
    assert parse_normalization({"mean": [0.5], "std": [0.25]}).values(1) == ([0.5], [0.25])
    assert parse_normalization(([0.1, 0.2], (0.3, 0.4))).std == (0.3, 0.4)
    assert parse_normalization(None) is None and parse_normalization("") is None
    assert parse_normalization(n.text()) == n
    for bad, why in [("0.5,0.5", "not understood"), ("a;b", "not a list of numbers"), ("0.5,0.5;0.5", "mean has 2"),
                     ("0.5;-1", "std must be > 0"), ("nan;1", "finite"), ({"mean": [0.5]}, "needs 'mean' and 'std'")]:
        with pytest.raises(InvalidParameterError, match=why):
            parse_normalization(bad)
    with pytest.raises(InvalidParameterError, match="3 channel"):
        parse_normalization("0.5;0.5").values(3)


def _plain_file(tmp_path, arch, shape, classes=10, **kwargs):
    net = build_model(arch, classes, shape, [0.0] * shape[0], [1.0] * shape[0], **kwargs).net
    path = tmp_path / f"{arch}.pt"
    torch.save(net.state_dict(), path)
    return path, net


def test_normalisation_precedence_option_file_architecture_dataset(tmp_path):
    from engine.data import get_spec

    path, _ = _plain_file(tmp_path, "small_cnn", (1, 28, 28))
    loaded = importers.import_checkpoint(path, "small_cnn", "mnist")
    assert loaded.card.to_dict()["source"]["normalization"] == "dataset"
    assert loaded.card.to_dict()["mean"] == pytest.approx(list(get_spec("mnist").mean))
    dm, _ = _plain_file(tmp_path, "dm_wide_resnet", (3, 32, 32), depth=10, width=1)
    loaded = importers.import_checkpoint(dm, "dm_wide_resnet", "cifar10", arch_kwargs={"depth": 10, "width": 1})
    assert loaded.card.to_dict()["source"]["normalization"] == "architecture"
    assert loaded.card.to_dict()["std"] != pytest.approx(list(get_spec("cifar10").std), abs=1e-6)
    loaded = importers.import_checkpoint(dm, "dm_wide_resnet", "cifar10", arch_kwargs={"depth": 10, "width": 1},
                                         normalization="none")
    assert loaded.card.to_dict()["source"]["normalization"] == "option" and loaded.card.to_dict()["std"] == [1.0] * 3


def test_state_dict_of_a_loaded_robustbench_model_unwraps_with_its_normalisation(tmp_path):
    torch.manual_seed(4)
    net = build_model("wide_resnet", 10, (3, 32, 32), [0.0] * 3, [1.0] * 3, **WRN).net.eval()
    mean, std = torch.tensor([0.3, 0.4, 0.5]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    state = {"normalize.mean": mean, "normalize.std": std, **{f"model.{k}": v for k, v in net.state_dict().items()}}
    path = tmp_path / "rb_sequential.pt"
    torch.save(state, path)
    loaded = importers.import_checkpoint(path, "wide_resnet", "cifar10", arch_kwargs=WRN)
    x = images()
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), net((x - mean) / std), atol=1e-6)
    assert loaded.card.to_dict()["source"]["normalization"] == "file"
    override = importers.import_checkpoint(path, "wide_resnet", "cifar10", arch_kwargs=WRN, normalization=Normalization())
    assert override.card.to_dict()["mean"] == [0.0] * 3


def test_torchvision_names_import_plain_state_dicts(tmp_path):
    path, net = _plain_file(tmp_path, "torchvision:resnet18", (3, 64, 64), classes=7)
    from engine.data import DatasetSpec

    spec = DatasetSpec("tiny", 7, tuple("abcdefg"), (3, 64, 64), (0.5,) * 3, (0.5,) * 3, "small_cnn", "test")
    loaded = importers.import_checkpoint(path, "torchvision:resnet18", spec, fmt="torchvision")
    assert loaded.card.to_dict()["arch"] == "torchvision:resnet18"
    assert loaded.card.to_dict()["source"]["normalization"] in ("architecture", "dataset")
    mean = torch.tensor(loaded.card.to_dict()["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(loaded.card.to_dict()["std"]).view(1, 3, 1, 1)
    x = images(2, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), net.eval()((x - mean) / std), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# uploads


def _upload_bytes(tmp_path) -> bytes:
    path = tmp_path / "u.pt"
    torch.save(build_model("small_cnn", 10, (1, 28, 28), [0.5], [0.5]).net.state_dict(), path)
    return path.read_bytes()


def test_upload_names_are_checked_and_never_overwrite(tmp_path):
    from engine import uploads

    data = _upload_bytes(tmp_path)
    kwargs = {"arch": "small_cnn", "dataset": "mnist", "dest_dir": tmp_path / "up"}
    for bad in ("x\x00y", "n" * 300, "../../x", "a/b"):
        with pytest.raises(InvalidParameterError):
            uploads.install_upload("m.pt", data, name=bad, **kwargs)
    assert not (tmp_path / "x.safetensors").exists()
    first = uploads.install_upload("m.pt", data, name="mine", **kwargs)
    second = uploads.install_upload("m.pt", data, name="mine", **kwargs)
    assert (first.name, second.name) == ("mine.safetensors", "mine-2.safetensors")
    assert uploads.install_upload("m.pt", data, name="mine", overwrite=True, **kwargs) == first
    assert uploads.install_upload("checkpoint.pt.best", data, **kwargs).name == "checkpoint-best.safetensors"
    assert uploads.install_upload("resnet.pth.tar", data, **kwargs).name == "resnet.safetensors"
    with pytest.raises(InvalidParameterError, match="not usable"):
        uploads.install_upload("m\x00.pt", data, **kwargs)


def test_upload_size_limit_admits_wrn_70_16_and_is_stated(tmp_path, monkeypatch):
    from engine import uploads

    assert uploads.MAX_UPLOAD_BYTES >= 1_070_000_000 + (1 << 26)  # WRN-70-16 in fp32, with room
    config = (Path(__file__).resolve().parents[3] / ".streamlit" / "config.toml").read_text()
    size_mb = int(next(line.split("=")[1] for line in config.splitlines() if line.startswith("maxUploadSize")))
    assert size_mb << 20 >= uploads.MAX_UPLOAD_BYTES
    monkeypatch.setattr(uploads, "MAX_UPLOAD_BYTES", 1000)
    with pytest.raises(InvalidParameterError, match="over the upload limit of 0.0 MiB|over the upload limit"):
        uploads.install_upload("m.pt", b"x" * 2000, arch="small_cnn", dataset="mnist", dest_dir=tmp_path)


def test_pickle_uploads_need_the_operator_switch(monkeypatch):
    from engine import uploads

    monkeypatch.delenv(uploads.ALLOW_PICKLE_ENV, raising=False)
    assert not uploads.pickle_uploads_allowed()
    monkeypatch.setenv(uploads.ALLOW_PICKLE_ENV, "1")
    assert uploads.pickle_uploads_allowed()
    monkeypatch.setenv(uploads.ALLOW_PICKLE_ENV, "yes please")
    assert not uploads.pickle_uploads_allowed()
