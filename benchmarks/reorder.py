"""Peak-minimising schedules: fxcost.passes.schedule_for_peak against Inductor's algorithms.

For each model, on fake tensors (nothing runs on real data): the peak activation memory of the
model as written (``fxcost.analyze``: inside code fx cannot trace, tensors live as long as
Python keeps them), of fxcost's graph of it in its own order (each tensor freed after its last
use), of the orders built by the Inductor-style algorithms (LPMF, BFS, DFS, as in
torch/_inductor/memory.py, re-implemented on fxcost's buffer model), of Inductor's choice (the
best of those and the graph order), of fxcost's order (best of all plus a local search), and a
lower bound no order can beat.

    python benchmarks/reorder.py [--markdown]
"""

from __future__ import annotations

import argparse
import random
import time
import warnings

import torch
import torch.nn as nn
import torchvision

from fxcost import format_bytes
from fxcost.passes import schedule_for_peak


def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """The U-Net of Ronneberger et al. (2015) with same-padded convolutions and BatchNorm:
    ``depth`` poolings, channels doubling from ``width``, transposed-conv upsampling, skips concatenated."""

    def __init__(self, cin: int = 3, classes: int = 2, width: int = 32, depth: int = 4):
        super().__init__()
        chans = [width * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList([double_conv(cin, chans[0])] + [double_conv(chans[i], chans[i + 1]) for i in range(depth)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth))])
        self.fuse = nn.ModuleList([double_conv(2 * chans[i], chans[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(chans[0], classes, 1)

    def forward(self, x):
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, fuse in zip(self.up, self.fuse):
            x = fuse(torch.cat([skips.pop(), up(x)], 1))
        return self.head(x)


class MultiHead(nn.Module):
    """A shared stem and several task heads, each expanding 4x and projecting back, with a
    forward written stage by stage (one list comprehension per layer, as multi-task code often
    is): the traced order computes every head's expansion before any projection."""

    def __init__(self, heads: int = 4, width: int = 64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.ReLU())
        self.expand = nn.ModuleList([nn.Conv2d(width, 4 * width, 1) for _ in range(heads)])
        self.act = nn.ReLU()
        self.project = nn.ModuleList([nn.Conv2d(4 * width, 8, 1) for _ in range(heads)])

    def forward(self, x):
        x = self.stem(x)
        hidden = [self.act(expand(x)) for expand in self.expand]
        return torch.cat([project(h) for project, h in zip(self.project, hidden)], 1)


class Program(nn.Module):
    """A random DAG over earlier values: 1x1 convs, concats, in-place ReLUs on copies, scalings;
    two outputs (the last value and one from the middle)."""

    def __init__(self, steps):
        super().__init__()
        self.steps = steps
        self.convs = nn.ModuleList()
        channels = [4]
        for kind, a, b, width in steps:
            if kind == "conv":
                self.convs.append(nn.Conv2d(channels[a], width, 1))
                channels.append(width)
            elif kind == "cat":
                channels.append(channels[a] + channels[b])
            else:
                channels.append(channels[a])
        self.channels = channels

    def forward(self, x):
        values, convs = [x], iter(self.convs)
        for kind, a, b, _ in self.steps:
            if kind == "conv":
                values.append(next(convs)(values[a]))
            elif kind == "cat":
                values.append(torch.cat([values[a], values[b]], 1))
            elif kind == "relu_":
                values.append(torch.relu(values[a].clone()).relu_())
            else:
                values.append(values[a] * 2)
        return values[-1] + values[-1].mean(), values[len(values) // 2]


def random_programs(count: int, seed: int = 0):
    """``count`` random step lists for :class:`Program` (6 to 30 steps, 2 to 128 channels)."""
    rng = random.Random(seed)
    for _ in range(count):
        steps = []
        for index in range(rng.randint(6, 30)):
            kind = rng.choice(["conv", "conv", "cat", "relu_", "scale"])
            steps.append((kind, rng.randint(0, index), rng.randint(0, index), rng.choice([2, 8, 32, 128])))
        yield steps


def hugging_face(name: str):
    """A Hugging Face model from a reduced config (2 layers, hidden 256, 4 heads, vocabulary
    1000) and its input (sequence 128): ``bert`` (BertModel) or ``gpt2`` (GPT2LMHeadModel,
    without its key/value cache: with it, the transformer returns a cache object fxcost keeps
    whole). fx cannot trace them: fxcost's graph holds the torch calls it captured."""
    import transformers

    ids = torch.randint(0, 1000, (1, 128), generator=torch.Generator().manual_seed(0))
    if name == "bert":
        config = transformers.BertConfig(hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=1024, vocab_size=1000)
        return transformers.BertModel(config).eval(), {"input_ids": ids}
    config = transformers.GPT2Config(n_embd=256, n_layer=2, n_head=4, vocab_size=1000, n_positions=128)
    return transformers.GPT2LMHeadModel(config).eval(), {"input_ids": ids, "use_cache": False}


def models():
    with torch.device("meta"):
        yield "googlenet", torchvision.models.googlenet(aux_logits=False, init_weights=False), (1, 3, 224, 224)
        yield "inception_v3", torchvision.models.inception_v3(aux_logits=False, init_weights=False), (1, 3, 299, 299)
        yield "densenet121", torchvision.models.densenet121(), (1, 3, 224, 224)
        yield "U-Net (width 32, depth 4)", UNet(), (1, 3, 256, 256)
        yield "multi-head (4 heads)", MultiHead(), (1, 3, 224, 224)
    yield "BERT encoder (2 layers, T=128)", *hugging_face("bert")
    bert, inputs = hugging_face("bert")
    yield "same BERT, torch.export graph", torch.export.export(bert, (), inputs).module(), inputs
    yield "GPT-2 (2 layers, T=128, no cache)", *hugging_face("gpt2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--random", type=int, default=300, help="random DAGs to compare on")
    args = parser.parse_args()
    headers = ["model", "nodes", "as written", "graph order", "LPMF", "BFS", "DFS", "Inductor's pick", "fxcost",
               "lower bound", "time"]
    rows = []
    for name, model, example in models():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            schedule = schedule_for_peak(model, example)
        seconds = time.perf_counter() - start
        rows.append([name, str(len(schedule.graph_module.graph.nodes)), format_bytes(schedule.peak_as_written_bytes),
                     format_bytes(schedule.peak_before_bytes),
                     format_bytes(schedule.peak_of("lpmf")), format_bytes(schedule.peak_of("bfs")),
                     format_bytes(schedule.peak_of("dfs")), format_bytes(schedule.inductor_peak_bytes),
                     f"{format_bytes(schedule.peak_after_bytes)} ({schedule.method})",
                     format_bytes(schedule.lower_bound_bytes), f"{seconds:.1f} s"])
    if args.markdown:
        print("| " + " | ".join(headers) + " |")
        print("|" + "---|" * len(headers))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        from tabulate import tabulate

        print(tabulate(rows, headers=headers, disable_numparse=True))
    print()
    print(random_summary(args.random))


def random_summary(count: int) -> str:
    """How often fxcost's order beats Inductor's choice on random DAGs, and by how much."""
    beaten = improved_by_search = 0
    ratios = []
    for steps in random_programs(count):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            schedule = schedule_for_peak(Program(steps), (1, 4, 6, 6))
        constructive = min(c.peak_bytes for c in schedule.candidates if c.method != "local search")
        improved_by_search += schedule.peak_of("local search") < constructive
        if schedule.peak_after_bytes < schedule.inductor_peak_bytes:
            beaten += 1
            ratios.append(schedule.inductor_peak_bytes / schedule.peak_after_bytes)
    mean = sum(ratios) / len(ratios) if ratios else 1.0
    return (f"random DAGs ({count}, seed 0): fxcost's order is lower than Inductor's choice on {beaten} "
            f"({100 * beaten / count:.0f}%), by {mean:.2f}x on average there (at most {max(ratios, default=1):.2f}x); "
            f"the local search lowered the best constructive order on {improved_by_search}")


if __name__ == "__main__":
    main()
