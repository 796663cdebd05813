"""True positives and true negatives of every ``epochal lint`` rule, on small snippets.

Each case is a fresh piece of code in the shape PROBLEMS.md describes (P6, P9-P12);
``lines`` is the exact set of lines the rule must report (empty: it must stay silent).
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from epochal.lint import RULES, lint_source

LOADER = "loader = DataLoader(Data(), batch_size=4, num_workers=4)\n"
DATASET_HEAD = """\
import numpy as np
from torch.utils.data import DataLoader, Dataset

class Data(Dataset):
    def __len__(self):
        return 8
"""

CASES: list[tuple[str, str, str, set[int]]] = [
    # ---- EPL001 (P6) ----
    ("EPL001", "global rng in __getitem__, 4 workers", DATASET_HEAD + """\
    def __getitem__(self, i):
        return np.random.rand()
""" + LOADER, {8}),
    ("EPL001", "numpy imported whole, helper function of the module", """\
import numpy
import torch.utils.data as tud

def jitter(x):
    return x + numpy.random.normal()

class Crops(tud.Dataset):
    def __getitem__(self, i):
        return jitter(i)

dl = tud.DataLoader(Crops(), num_workers=n)
""", {5}),
    ("EPL001", "from numpy.random import choice", """\
from numpy.random import choice
from torch.utils.data import DataLoader, Dataset
class D(Dataset):
    def __getitem__(self, i):
        return choice([1, 2])
DataLoader(D(), 2, True, None, None, 3)
""", {5}),
    ("EPL001", "num_workers literally 0", DATASET_HEAD + """\
    def __getitem__(self, i):
        return np.random.rand()
loader = DataLoader(Data(), num_workers=0)
""", set()),
    ("EPL001", "num_workers not given", DATASET_HEAD + """\
    def __getitem__(self, i):
        return np.random.rand()
loader = DataLoader(Data(), batch_size=2)
""", set()),
    ("EPL001", "worker_init_fn that reseeds numpy (via a helper)", DATASET_HEAD + """\
    def __getitem__(self, i):
        return np.random.rand()

def seed_all(s):
    np.random.seed(s)

def init_fn(worker_id):
    seed_all(worker_id)

loader = DataLoader(Data(), num_workers=2, worker_init_fn=init_fn)
""", set()),
    ("EPL001", "worker_init_fn defined here that does not reseed numpy", DATASET_HEAD + """\
    def __getitem__(self, i):
        return np.random.rand()

def init_fn(worker_id):
    print(worker_id)

loader = DataLoader(Data(), num_workers=2, worker_init_fn=init_fn)
""", {8}),
    ("EPL001", "worker_init_fn from a library is trusted", DATASET_HEAD + """\
    def __getitem__(self, i):
        return np.random.rand()
from lightning.fabric.utilities.seed import pl_worker_init_function
loader = DataLoader(Data(), num_workers=2, worker_init_fn=pl_worker_init_function)
""", set()),
    ("EPL001", "default_rng derived from seed and index", DATASET_HEAD + """\
    def __getitem__(self, i):
        rng = np.random.default_rng((self.seed, i))
        return rng.random()
""" + LOADER, set()),
    ("EPL001", "Generator passed in as an argument", DATASET_HEAD + """\
    def __getitem__(self, i):
        return self.transform(i, self.make_rng(i))
    def transform(self, x, rng: np.random.Generator):
        return x + rng.normal()
""" + LOADER, set()),
    ("EPL001", "dataset reseeds numpy per index itself", DATASET_HEAD + """\
    def __getitem__(self, i):
        np.random.seed(i)
        return np.random.rand()
""" + LOADER, set()),
    ("EPL001", "generator created in __init__ and used per sample", DATASET_HEAD + """\
    def __init__(self):
        self.rng = np.random.RandomState(0)
    def __getitem__(self, i):
        return self.rng.rand()
""" + LOADER, {10}),
    ("EPL001", "generator re-created per worker is fine", DATASET_HEAD + """\
    def __init__(self):
        self.rng = np.random.default_rng(0)
    def worker_init(self, seed):
        self.rng = np.random.default_rng(seed)
    def __getitem__(self, i):
        return self.rng.random()
""" + LOADER, set()),
    ("EPL001", "np.random in a class that is not a dataset", """\
import numpy as np
from torch.utils.data import DataLoader
class Sampler:
    def __getitem__(self, i):
        return np.random.rand()
DataLoader(ds, num_workers=2)
""", set()),
    ("EPL001", "subclass of the project's own dataset", DATASET_HEAD + """\
class Flip(Data):
    def __getitem__(self, i):
        return np.random.rand() < 0.5
""" + LOADER, {9}),
    # ---- EPL002 (P10) ----
    ("EPL002", "DistributedSampler, epoch loop, no set_epoch", """\
from torch.utils.data.distributed import DistributedSampler
sampler = DistributedSampler(ds)
for epoch in range(10):
    for batch in DataLoader(ds, sampler=sampler):
        step(batch)
""", {2}),
    ("EPL002", "set_epoch called", """\
from torch.utils.data.distributed import DistributedSampler
sampler = DistributedSampler(ds)
for epoch in range(10):
    loader.sampler.set_epoch(epoch)
    for batch in loader:
        step(batch)
""", set()),
    ("EPL002", "shuffle=False needs no set_epoch", """\
sampler = DistributedSampler(ds, shuffle=False)
for epoch in range(10):
    for batch in DataLoader(ds, sampler=sampler):
        step(batch)
""", set()),
    ("EPL002", "no epoch loop (a framework runs it)", """\
sampler = DistributedSampler(ds)
trainer.fit(model, DataLoader(ds, sampler=sampler))
""", set()),
    # ---- EPL003 (P11) ----
    ("EPL003", "unpacked batch moved without assignment", """\
for x, y in loader:
    x.to(device)
    y.cuda()
    model.to(device)
""", {2, 3}),
    ("EPL003", "annotated tensor parameter; tensor made by torch", """\
import torch
def f(t: torch.Tensor, m: torch.nn.Module):
    t.to("cuda")
    m.to("cuda")
    z = torch.zeros(3)
    z.cuda()
    net = Net()
    net.cuda()
""", {3, 6}),
    ("EPL003", "assigned results and module loops are fine", """\
x = x.to(device)
batch = tokenizer(texts, return_tensors="pt")
batch.to(device)
for m in model.modules():
    m.to(device)
for name, child in model.named_children():
    child.cuda()
criterion.to(device)
self.model.to(device)
""", set()),
    # ---- EPL004 (P11) ----
    ("EPL004", "losses.append(loss) in the training loop", """\
import torch.nn.functional as F
losses = []
for x, y in loader:
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    losses.append(loss)
    aux_losses.append(criterion(model(x), y))
""", {6, 7}),
    ("EPL004", "item(), detach(), floats, no_grad", """\
import torch
for x, y in loader:
    loss = criterion(model(x), y)
    losses.append(loss.item())
    losses.append(loss.detach())
    running_loss = 0.0
    running_loss += loss.item()
    losses.append(running_loss)
    with torch.no_grad():
        val_loss = criterion(model(x), y)
        val_losses.append(val_loss)
epoch_loss = running_loss / len(loader)
for _ in range(3):
    history.append(epoch_loss)
""", set()),
    ("EPL004", "append outside any loop", """\
loss = criterion(model(x), y)
losses.append(loss)
""", set()),
    # ---- EPL005 (P11) ----
    ("EPL005", "backward and step, zero_grad missing", """\
for x, y in loader:
    loss = criterion(model(x), y)
    loss.backward()
    optimizer.step()
""", {4}),
    ("EPL005", "zero_grad once per epoch, step per batch", """\
for epoch in range(3):
    optimizer.zero_grad()
    for x, y in loader:
        criterion(model(x), y).backward()
        optimizer.step()
""", {5}),
    ("EPL005", "set_to_none, model.zero_grad, accumulation under if", """\
for x, y in loader:
    optimizer.zero_grad(set_to_none=True)
    criterion(model(x), y).backward()
    optimizer.step()
for x, y in loader:
    model.zero_grad()
    criterion(model(x), y).backward()
    opt.step()
for i, (x, y) in enumerate(loader):
    (criterion(model(x), y) / 4).backward()
    if (i + 1) % 4 == 0:
        optimizer.step()
        optimizer.zero_grad()
""", set()),
    ("EPL005", "grads reset by hand or by a helper; scheduler.step is not an optimizer", """\
def reset(model):
    for p in model.parameters():
        p.grad = None
for x, y in loader:
    loss.backward()
    optimizer.step()
    reset(model)
for x, y in loader:
    loss.backward()
    scheduler.step()
""", set()),
    # ---- EPL006 (P10) ----
    ("EPL006", "replace / lstrip / f-string prefix around load_state_dict", """\
sd = torch.load(path)
model.load_state_dict({k.replace("module.", ""): v for k, v in sd.items()})
bare = {k.lstrip("module."): v for k, v in sd.items()}
wrapped = {f"module.{k}": v for k, v in sd.items()}
""", {2, 3, 4}),
    ("EPL006", "exact prefix removal, or no load_state_dict in the file", """\
sd = torch.load(path)
model.load_state_dict({k.removeprefix("module."): v for k, v in sd.items()})
other = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
""", set()),
    ("EPL006", "string replace of module. in a file that loads nothing", """\
names = [n.replace("module.", "") for n, _ in model.named_parameters()]
""", set()),
    ("EPL006", "text that starts with the word module is not the prefix", """\
sd = torch.load(path)
model.load_state_dict(sd)
message = f"module {name!r} is not installed"
""", set()),
    # ---- EPL007 (P9) ----
    ("EPL007", "torch.save of the model inside the epoch loop", """\
import torch
for epoch in range(10):
    train_one_epoch()
    torch.save(model.state_dict(), "ckpt.pt")
""", {4}),
    ("EPL007", "temp file then os.replace; save after the loop; features", """\
import os
import torch
def save(state, path):
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)
for epoch in range(10):
    save(model.state_dict(), "ckpt.pt")
for i, feats in enumerate(all_features):
    torch.save(feats, f"features_{i}.pt")
torch.save(model.state_dict(), "final.pt")
""", set()),
    ("EPL007", "helper called from a loop", """\
import torch
def save_checkpoint(state, filename):
    torch.save(state, filename)
for epoch in range(10):
    save_checkpoint({"epoch": epoch}, "checkpoint.pth")
""", {3}),
    # ---- EPL008 (P12) ----
    ("EPL008", "parser stored on args, args passed to mp.spawn", """\
import argparse
import torch.multiprocessing as mp
parser = argparse.ArgumentParser()
args = parser.parse_args()
args.parser = parser
mp.spawn(worker, args=(args,), nprocs=2)
""", {6}),
    ("EPL008", "dataclass field holding the parser, via Process and partial", """\
import argparse
import dataclasses
import functools
import multiprocessing

@dataclasses.dataclass
class Cfg:
    parser: argparse.ArgumentParser

cfg = Cfg(parser=argparse.ArgumentParser())
multiprocessing.Process(target=run, args=(cfg,)).start()
torch.multiprocessing.spawn(functools.partial(run, cfg=cfg), nprocs=2)
""", {11, 12}),
    ("EPL008", "plain data to spawn is fine", """\
import argparse
import torch.multiprocessing as mp
parser = argparse.ArgumentParser()
args = parser.parse_args()
mp.spawn(worker, args=(vars(args), args), nprocs=2)
""", set()),
]  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "source", "lines"),
    [pytest.param(rule, src, lines, id=f"{rule}-{name}") for rule, name, src, lines in CASES],
)
def test_rule_reports_exactly_the_bug_lines(rule: str, source: str, lines: set[int]) -> None:
    findings = lint_source(textwrap.dedent(source), "snippet.py", select=[rule])
    assert {f.line for f in findings} == lines, [f"{f.line}: {f.message}" for f in findings]
    for f in findings:
        assert f.rule == rule and f.path == "snippet.py" and f.col >= 1


def test_every_rule_has_positive_and_negative_cases() -> None:
    for rule in RULES:
        own = [lines for r, _, _, lines in CASES if r == rule.id]
        assert any(own) and any(not lines for lines in own), rule.id


def test_rules_have_stable_ids_and_documentation() -> None:
    ids = [rule.id for rule in RULES]
    assert ids == [f"EPL00{i}" for i in range(1, 9)]
    problems = {rule.id: rule.problem for rule in RULES}
    assert problems == {
        "EPL001": "P6", "EPL002": "P10", "EPL003": "P11", "EPL004": "P11",
        "EPL005": "P11", "EPL006": "P10", "EPL007": "P9", "EPL008": "P12",
    }  # fmt: skip
    for rule in RULES:
        module = __import__(rule.collect.__module__, fromlist=["_"])
        doc = module.__doc__ or ""
        assert doc.startswith(f"{rule.id} ({rule.problem})")
        assert all(word in doc for word in ("What:", "Why:", "Fix:")), rule.id
        assert len(rule.explanation) > 200 and "Fix:" in rule.explanation


class _OwnedRng(Dataset):
    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        return int(self.rng.integers(0, 2**62))


def test_epl001_premise_owned_generator_repeats_in_every_worker() -> None:
    """P6 as EPL001 reports it: two real workers draw the same numbers from self.rng."""
    loader = DataLoader(_OwnedRng(), batch_size=None, num_workers=2)
    draws = [int(x) for x in loader]
    # workers take indices round-robin: 0,2 go to worker 0 and 1,3 to worker 1
    assert draws[0] == draws[1] and draws[2] == draws[3]
    assert len(set(draws)) == 2
    assert torch.utils.data.get_worker_info() is None
