"""The command line, run in a subprocess like a user would."""

import json
import os
import subprocess
import sys
import textwrap

import pytest


def run(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "fxcost", *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_table_for_a_torchvision_model():
    result = run("torchvision:resnet18")
    assert result.returncode == 0, result.stderr
    assert "layer1.0.conv1" in result.stdout and "1.81 GMACs" in result.stdout
    assert "11.7 M params" in result.stdout


@pytest.mark.parametrize("args, expect", [
    (["--depth", "1"], "layer4"),
    (["--by", "op"], "MACs %"),
    (["--top", "3", "--sort", "flops"], "total (all)"),
    (["--roofline", "cortex-m7", "--top", "3"], "compute-bound"),
    (["--format", "markdown", "--top", "2"], "| module"),
    (["--exclude", "fc", "--raw"], "11,176,512 params"),
    (["--dtype", "float16"], "float16"),
    (["--columns", "name,dtype,macs", "--dtype", "float16"], "float16"),
])
def test_views(args, expect):
    result = run("torchvision:resnet18", *args)
    assert result.returncode == 0, result.stderr
    assert expect in result.stdout


def test_json_and_csv():
    result = run("torchvision:squeezenet1_1", "--input", "2x3x64x64", "--format", "json")
    data = json.loads(result.stdout)
    assert data["inputs"][0][1] == [2, 3, 64, 64]
    result = run("torchvision:squeezenet1_1", "--format", "csv")
    assert result.stdout.splitlines()[0].startswith("name,op,target")


def test_user_model_by_module_path(tmp_path):
    (tmp_path / "mymodels.py").write_text(textwrap.dedent("""
        import torch.nn as nn

        def tiny():
            return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())

        class Gate(nn.Module):
            def forward(self, x):
                if x.sum() > 0:
                    return x
                return -x

        def untraceable():
            return nn.Sequential(nn.Linear(4, 4), Gate(), nn.Linear(4, 2))
    """))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = run("mymodels:tiny", "--input", "1x3x10x10", "--raw", env=env)
    assert result.returncode == 0, result.stderr
    assert f"{8 * 8 * 8 * 27:,}" in result.stdout  # 8x8 outputs x 8 channels x 3*3*3
    result = run("mymodels:tiny", env=env)
    assert result.returncode == 2 and "needs --input" in result.stderr
    result = run("mymodels:untraceable", "--input", "2x4", env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "module '1'" in result.stderr and "depends on tensor values" in result.stderr
    assert "if x.sum() > 0" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["torchvision:resnet5000"], "torchvision has no model 'resnet5000'"),
    (["torchvision:resnet18", "--input", "1x3xAx224"], "bad input shape"),
    (["torchvision:resnet18", "--input", "0x3x224x224"], "at least 1"),
    (["resnet18"], "must look like torchvision:resnet50"),
    (["torchvision:resnet18", "--input", "1x4x64x64"], "expected input"),
    (["torchvision:resnet18", "--dtype", "float17"], "unknown --dtype"),
])
def test_errors_are_one_clear_line(args, message):
    result = run(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("fxcost: error:") and message in result.stderr


def test_help_documents_examples():
    result = run("--help")
    assert result.returncode == 0
    for text in ("torchvision:NAME", "--depth", "--by", "--roofline", "--format", "examples:"):
        assert text in result.stdout
