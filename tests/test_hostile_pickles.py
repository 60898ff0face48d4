"""Pickles that kill or stall the process that builds or walks them, though they ask for no code:
nesting a million deep (CPython crashes hashing such a tuple), one object shared a billion times,
100,000 tensors over one storage, stride-0 tensors claiming 2^34 frames, keys of 200,000 characters.

Each is built here (scaled to just over the limit where the class allows; at full size in a
subprocess where it would crash this one) and must end in exit status 2 and one line naming the file,
quickly, with no output written; real checkpoints near the limits still load (see `io/limits.py`).
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures_formats import encodec_layers
from rvq_viewer.cli import main
from rvq_viewer.errors import LoadError
from rvq_viewer.io import FeatureSource, load_quantizer
from rvq_viewer.io import limits
from rvq_viewer.io.pickle_scan import check_pickle

D = 16
SECONDS = 20          # every refusal, on a loaded two-core machine; the scan itself takes milliseconds


# --- writing pickles opcode by opcode -------------------------------------------------------------------
class Pickle:
    """A protocol-2 pickle written opcode by opcode (what torch's restricted unpickler reads)."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")
        self.memo = 0

    def raw(self, ops: bytes) -> "Pickle":
        self.out += ops
        return self

    def int(self, value: int) -> "Pickle":
        return self.raw(b"K" + bytes([value]) if 0 <= value < 256 else b"J" + struct.pack("<i", value))

    def str(self, text: str) -> "Pickle":
        data = text.encode("utf-8", "surrogatepass")
        return self.raw(b"X" + struct.pack("<I", len(data)) + data)

    def put(self) -> int:
        self.raw(b"r" + struct.pack("<I", self.memo))
        self.memo += 1
        return self.memo - 1

    def get(self, index: int) -> "Pickle":
        return self.raw(b"j" + struct.pack("<I", index))

    def bytes(self) -> bytes:
        return bytes(self.out + b".")


def deep_tuple(depth: int) -> bytes:
    """((((),),),) nested `depth` deep, built without a single MARK (TUPLE1 on the stack's top)."""
    return Pickle().raw(b")" + b"\x85" * (depth - 1)).bytes()


def deep_key(depth: int) -> bytes:
    """{deep tuple: 1}: building the dict hashes the key."""
    return Pickle().raw(b"}" + b")" + b"\x85" * (depth - 1)).int(1).raw(b"s").bytes()


def deep_set(depth: int) -> bytes:
    """builtins.set([deep tuple]) (torch allows `set`): building it hashes the tuple."""
    return Pickle().raw(b"cbuiltins\nset\n]" + b")" + b"\x85" * (depth - 1) + b"a\x85R").bytes()


def deep_lists_by_mutation(depth: int) -> bytes:
    """Lists made empty first and then appended one into the next: nothing nests while it is built,
    the result is `depth` deep."""
    p = Pickle().raw(b"](")
    for _ in range(depth):
        p.raw(b"]")
        p.put()
    for i in range(depth - 1):
        p.get(i).get(i + 1).raw(b"a")
    return p.raw(b"e").bytes()


def laughs(fan: int, levels: int, leaf: bytes = b"K\x01") -> bytes:
    """A list of `fan` references to a list of `fan` references... `levels` deep: fan**levels visits."""
    p = Pickle()
    p.raw(b"](" + leaf * fan + b"e")
    index = p.put()
    for _ in range(levels - 1):
        p.raw(b"](")
        for _ in range(fan):
            p.get(index)
        p.raw(b"e")
        index = p.put()
    return p.bytes()


# --- wrapping a pickle in each container torch.load reads -----------------------------------------------
def in_torch_zip(data: bytes, path: Path) -> Path:
    """A torch zip archive (written by torch.save) whose data.pkl is replaced by `data`."""
    buf = io.BytesIO()
    torch.save({"a": torch.zeros(2)}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as source, zipfile.ZipFile(path, "w") as out:
        for info in source.infolist():
            out.writestr(info, data if info.filename.endswith("data.pkl") else source.read(info))
    return path


def in_legacy(data: bytes, path: Path) -> Path:
    """The pre-zip torch format: magic number, protocol, system info, the object, storage keys."""
    header = (pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
              + pickle.dumps({"protocol_version": 1001, "little_endian": True,
                              "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2))
    path.write_bytes(header + data + b"\x80\x02]q\x00.")
    return path


def in_sovits(data: bytes, path: Path) -> Path:
    """A GPT-SoVITS v3 file: a torch zip whose magic "PK" is overwritten with "03"."""
    zipped = bytearray(in_torch_zip(data, path).read_bytes())
    zipped[:2] = b"03"
    path.write_bytes(bytes(zipped))
    return path


WRAPPERS = {"plain": lambda data, path: (path.write_bytes(data), path)[1], "zip": in_torch_zip,
            "legacy": in_legacy, "sovits": in_sovits}


def cli_refuses(capsys, argv, path: Path, *needles: str, output: Path | None = None) -> str:
    """`main(argv)` exits 2 within SECONDS, with one line naming `path` and holding `needles`."""
    start = time.monotonic()
    code = main([str(a) for a in argv])
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("rvq-viewer: error: ") and "Traceback" not in err, err
    assert str(path) in err and all(n in err for n in needles), err
    assert elapsed < SECONDS, f"{elapsed:.1f} s"
    if output is not None:
        assert output.read_text() == "previous", "the previous output must be left as it was"
    return err


@pytest.fixture()
def features(tmp_path):
    path = tmp_path / "feats.npy"
    np.save(path, np.random.default_rng(0).standard_normal((64, D)).astype(np.float32))
    return path


@pytest.fixture()
def checkpoint(tmp_path):
    path = tmp_path / "good.pt"
    torch.save(encodec_layers(torch.Generator().manual_seed(0), "quantizer.vq.", 2, 32, D), path)
    return path


# --- nesting ------------------------------------------------------------------------------------------------
NESTING = {"tuple": deep_tuple, "dict key": deep_key, "set item": deep_set, "lists": deep_lists_by_mutation}


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
@pytest.mark.parametrize("shape", sorted(NESTING))
def test_nesting_just_over_the_limit_is_refused(tmp_path, capsys, checkpoint, wrapper, shape):
    data = NESTING[shape](limits.MAX_NESTING + 1)
    bomb = WRAPPERS[wrapper](data, tmp_path / f"deep{'.pth' if wrapper == 'sovits' else '.pt'}")
    with pytest.raises(LoadError, match="refused: the pickle nests"):
        load_quantizer(bomb)
    report = tmp_path / "out.json"
    report.write_text("previous")
    cli_refuses(capsys, ["info", bomb], bomb, "nests")
    if wrapper in ("zip", "legacy"):               # a feature file of the same build
        feature = tmp_path / "deep_feats.pt"
        feature.write_bytes(bomb.read_bytes())
        cli_refuses(capsys, ["audit", checkpoint, feature, "--json", report, "--quiet"], feature, "nests",
                    output=report)


def test_nesting_at_the_limit_still_loads(tmp_path):
    """A tuple and lists nested exactly MAX_NESTING deep are measured, not refused (the file then
    fails for holding no tensors, as any pickle of plain data does)."""
    for build in (deep_tuple, deep_lists_by_mutation):
        measure = check_pickle(build(limits.MAX_NESTING - 1), tmp_path / "x.pt")
        assert measure.depth <= limits.MAX_NESTING
        path = in_torch_zip(build(limits.MAX_NESTING - 1), tmp_path / "x.pt")
        with pytest.raises(LoadError, match="not a checkpoint|no tensors"):
            load_quantizer(path)


def test_millions_deep_never_crash_the_process(tmp_path, checkpoint):
    """At the size that crashed CPython (three million deep), in a child process: each file, as a
    checkpoint and as features, is one refusal, and the child lives to print it."""
    depth = 3_000_000
    files = {f"{shape}-{wrapper}": WRAPPERS[wrapper](NESTING[shape](depth), tmp_path / f"{shape}-{wrapper}.pt")
             for shape in ("tuple", "dict key", "set item") for wrapper in ("plain", "zip", "legacy")}
    code = ("import sys, json\nfrom rvq_viewer.io import load_quantizer, FeatureSource\n"
            "out = {}\nfor name, path in json.loads(sys.argv[1]).items():\n"
            "    for kind, load in (('ckpt', load_quantizer), ('feats', lambda p: list(FeatureSource([p], 16)))):\n"
            "        try: load(path); out[name + kind] = 'loaded'\n"
            "        except Exception as e: out[name + kind] = type(e).__name__ + ': ' + str(e)\n"
            "print(json.dumps(out))\n")
    done = subprocess.run([sys.executable, "-c", code, json.dumps({k: str(v) for k, v in files.items()})],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    results = json.loads(done.stdout)
    assert len(results) == 2 * len(files)
    for name, text in results.items():
        assert text.startswith("LoadError: ") and "refused: the pickle nests" in text, (name, text)
    start = time.monotonic()
    cli = subprocess.run([sys.executable, "-m", "rvq_viewer", "audit", str(checkpoint),
                          str(files["dict key-zip"]), "--quiet"], capture_output=True, text=True, timeout=300)
    assert cli.returncode == 2 and cli.stderr.count("\n") == 1 and "nests tuples" in cli.stderr, cli.stderr
    assert str(files["dict key-zip"]) in cli.stderr and time.monotonic() - start < 120


# --- sharing: expansion bombs -------------------------------------------------------------------------------
def tensor_laughs(path: Path, fan: int = 64, levels: int = 6, as_dicts: bool = False) -> Path:
    """torch.save of nested lists (or dicts) of references to one tensor: the memo makes it small."""
    layer: object = torch.zeros(4, D)
    for _ in range(levels):
        layer = {f"k{i}": layer for i in range(fan)} if as_dicts else [layer] * fan
    state = encodec_layers(torch.Generator().manual_seed(1), "quantizer.vq.", 2, 32, D)
    torch.save({**state, "extra": layer} if not as_dicts else {"model": layer}, path)
    return path


@pytest.mark.parametrize("as_dicts", [False, True])
def test_billion_laughs_of_tensors_are_refused(tmp_path, capsys, checkpoint, as_dicts):
    bomb = tensor_laughs(tmp_path / "laughs.pt", as_dicts=as_dicts)
    assert bomb.stat().st_size < 20_000, "64^6 references fit in a few KB"
    cli_refuses(capsys, ["info", bomb], bomb, "expansion bomb")
    report = tmp_path / "r.json"
    report.write_text("previous")
    cli_refuses(capsys, ["audit", checkpoint, bomb, "--json", report, "--quiet"], bomb, "expansion bomb",
                output=report)


def test_expansion_just_over_the_limit_is_refused_and_under_it_loads(tmp_path):
    fan = 2
    levels = int(np.ceil(np.log2(limits.MAX_EXPANDED))) + 1                    # 2^levels > the limit
    with pytest.raises(LoadError, match="expansion bomb"):
        check_pickle(laughs(fan, levels), tmp_path / "x.pt")
    assert check_pickle(laughs(fan, 12), tmp_path / "x.pt").expanded > 4000    # shared, small: fine


def test_many_tensors_sharing_one_storage_are_refused(tmp_path, capsys):
    """100,000 layers of one storage in the issue; MAX_TENSORS + 1 views here."""
    base = torch.randn(32 * D)
    state = {f"quantizer.vq.layers.{i}._codebook.embed": base.view(32, D) for i in range(limits.MAX_TENSORS + 1)}
    bomb = tmp_path / "layers.pt"
    torch.save(state, bomb)
    cli_refuses(capsys, ["info", bomb], bomb, f"more than {limits.MAX_TENSORS:,} tensors")


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_stride_zero_tensor_claiming_2_34_frames_is_refused(tmp_path, capsys, checkpoint, suffix):
    bomb = tmp_path / f"frames{suffix}"
    torch.save(torch.randn(D).expand(2 ** 34, D), bomb, _use_new_zipfile_serialization=suffix == ".pt")
    assert bomb.stat().st_size < 8192
    report = tmp_path / "r.json"
    report.write_text("previous")
    cli_refuses(capsys, ["audit", checkpoint, bomb, "--json", report, "--quiet"], bomb, "claim",
                output=report)
    with pytest.raises(LoadError, match="claim"):
        FeatureSource([bomb], D).total_frames()
    with pytest.raises(LoadError, match="claim"):
        load_quantizer(bomb)


def test_long_keys_and_long_digit_strings(tmp_path, capsys, checkpoint, features):
    """A key of 200,000 digits is refused; metadata strings and ints of many digits load as data."""
    state = encodec_layers(torch.Generator().manual_seed(2), "quantizer.vq.", 2, 32, D)
    keyed = tmp_path / "key.pt"
    torch.save({**state, "9" * 200_000: torch.zeros(1)}, keyed)
    cli_refuses(capsys, ["info", keyed], keyed, "dict key longer than")
    digits = tmp_path / "digits.pt"
    torch.save({"state_dict": state, "step": "9" * 200_000, "config": {"n_q": "9" * 200_000, "seed": 10 ** 600}},
               digits)
    start = time.monotonic()
    assert main(["audit", str(digits), str(features), "--quiet"]) == 0
    assert time.monotonic() - start < SECONDS
    capsys.readouterr()


# --- real checkpoints near the limits still load ------------------------------------------------------------
def test_a_large_real_shaped_checkpoint_loads(tmp_path):
    """Five thousand tensors (optimizer state included), tied weights, a config 40 levels deep and a
    back-reference (OmegaConf nodes point at their parent): none of it is refused."""
    g = torch.Generator().manual_seed(3)
    state = encodec_layers(g, "quantizer.vq.", 4, 64, D)
    tied = torch.randn(64, D, generator=g)
    model = {**state, **{f"decoder.block.{i}.weight": torch.randn(3, 3, generator=g) for i in range(2500)},
             "encoder.embed.weight": tied, "decoder.embed.weight": tied}
    optimizer = {"state": {i: {"exp_avg": torch.zeros(3)} for i in range(2500)}, "param_groups": [{"lr": 1e-3}]}
    config: dict = {"leaf": 1}
    for level in range(40):
        config = {"child": config, "level": level}
    config["parent"] = config
    path = tmp_path / "train.ckpt"
    torch.save({"state_dict": model, "optimizer_states": [optimizer], "hyper_parameters": config}, path)
    start = time.monotonic()
    quantizer = load_quantizer(path)
    assert quantizer.n_q == 4 and time.monotonic() - start < SECONDS
