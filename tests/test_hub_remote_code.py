"""The encoder folder as transformers sees it: auto classes, the pipeline, and remote code without gh_hf."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, pipeline

from gh_hf import GHConfig, GHImageProcessor, GHModel
from gh_hf.data import build_eval_transform
from gh_hf.hub import image_processor_for, save_encoder_folder

CODE_FILES = ["configuration_gh.py", "image_processing_gh.py", "modeling_gh.py"]


def _image(height: int, width: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


@pytest.fixture
def encoder_dir(tmp_path, tiny_config):
    encoder = GHModel(tiny_config).eval()
    return save_encoder_folder(encoder, tmp_path / "encoder")


@pytest.mark.parametrize(
    ("in_chans", "size", "crop_pct", "image_size", "mode"),
    [
        (1, (23, 16), 1.0, 16, "RGB"),  # odd crop offset: torchvision rounds, transformers floors
        (1, (16, 16), 1.0, 16, "L"),
        (3, (31, 40), 0.875, 24, "RGB"),
        (3, (40, 29), 1.0, 12, "L"),  # grayscale input to an RGB encoder
    ],
)
def test_processor_equals_the_evaluation_transform(in_chans, size, crop_pct, image_size, mode):
    config = GHConfig(
        backbone="resnet18",
        in_chans=in_chans,
        image_size=image_size,
        image_mean=[0.3] * in_chans,
        image_std=[0.4] * in_chans,
    )
    image = _image(size[1], size[0], mode)
    processed = image_processor_for(config, crop_pct)(image, return_tensors="pt").pixel_values
    expected = build_eval_transform(image_size, in_chans, config.image_mean, config.image_std, crop_pct)(
        image
    )
    assert processed.shape == (1, in_chans, image_size, image_size)
    torch.testing.assert_close(processed[0], expected, rtol=0, atol=1e-6)


def test_processor_rejects_unsupported_channels():
    with pytest.raises(ValueError, match="num_channels=2"):
        GHImageProcessor(num_channels=2, image_mean=[0.5, 0.5], image_std=[0.5, 0.5])
    with pytest.raises(ValueError, match="image_mean"):
        GHImageProcessor(num_channels=1, image_mean=[0.5, 0.5, 0.5], image_std=[0.5])


def test_encoder_folder_names_its_code_in_auto_map(encoder_dir, tiny_config):
    config = json.loads((encoder_dir / "config.json").read_text())
    processor = json.loads((encoder_dir / "preprocessor_config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_gh.GHConfig",
        "AutoModel": "modeling_gh.GHModel",
    }
    assert processor["auto_map"] == {"AutoImageProcessor": "image_processing_gh.GHImageProcessor"}
    assert processor["size"] == {"shortest_edge": 16} and processor["crop_size"] == {
        "height": 16,
        "width": 16,
    }
    assert processor["num_channels"] == 1 and processor["image_mean"] == tiny_config.image_mean
    assert sorted(path.name for path in encoder_dir.iterdir()) == sorted(
        [*CODE_FILES, "config.json", "model.safetensors", "preprocessor_config.json"]
    )


def test_auto_classes_load_the_folder_with_gh_hf(encoder_dir):
    processor = AutoImageProcessor.from_pretrained(encoder_dir)
    model = AutoModel.from_pretrained(encoder_dir)
    assert type(processor) is GHImageProcessor and type(model) is GHModel
    reference = GHModel.from_pretrained(encoder_dir)
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor, rtol=0, atol=0)


def test_pipeline_returns_the_pooled_output(encoder_dir):
    image = _image(20, 17)
    encoder = AutoModel.from_pretrained(encoder_dir).eval()
    processor = AutoImageProcessor.from_pretrained(encoder_dir)
    with torch.no_grad():
        output = encoder(**processor(image, return_tensors="pt"))
        via_eval_transform = encoder(build_eval_transform(16, 1, [0.5], [0.5])(image)[None]).pooler_output
    extractor = pipeline("image-feature-extraction", model=str(encoder_dir), pool=True)
    embedding = extractor(image, return_tensors=True)
    assert embedding.shape == (1, encoder.num_features)
    torch.testing.assert_close(embedding, output.pooler_output)
    torch.testing.assert_close(embedding, via_eval_transform)
    # Without pool=True the pipeline returns the first output: the last feature map.
    feature_map = pipeline("image-feature-extraction", model=str(encoder_dir))(image, return_tensors=True)
    torch.testing.assert_close(feature_map, output.last_hidden_state)


# How gh_hf is made unimportable in the subprocess: hidden (a meta-path finder refuses it), a
# plain module named gh_hf shadowing the package ("'gh_hf' is not a package"), or one that raises.
UNIMPORTABLE = {
    "hidden": r"""
class HideGhHf:
    def find_spec(self, name, path=None, target=None):
        if name == "gh_hf" or name.startswith("gh_hf."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, HideGhHf())
""",
    "not_a_package": "fake = ''\n",
    "broken": "fake = 'raise RuntimeError(\"a broken gh_hf install\")'\n",
}

REMOTE_SCRIPT = r"""
import os, sys, tempfile

fake = None
SETUP
if fake is not None:  # a gh_hf.py first on sys.path shadows the installed package
    folder = tempfile.mkdtemp()
    with open(os.path.join(folder, "gh_hf.py"), "w") as handle:
        handle.write(fake)
    sys.path.insert(0, folder)

import numpy as np, torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, pipeline

folder, expected_file = sys.argv[1], sys.argv[2]
try:
    AutoModel.from_pretrained(folder)
    raise SystemExit("loaded without trust_remote_code")
except ValueError as error:
    print("\nREFUSED:", " ".join(str(error).split()))  # after the prompt transformers prints
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
image = Image.fromarray(np.arange(20 * 17 * 3, dtype=np.uint8).reshape(20, 17, 3))
with torch.no_grad():
    pooled = model(**processor(image, return_tensors="pt")).pooler_output
extractor = pipeline("image-feature-extraction", model=folder, trust_remote_code=True, pool=True)
embedding = extractor(image, return_tensors=True)
torch.testing.assert_close(embedding, pooled)
torch.testing.assert_close(pooled, torch.load(expected_file))
assert not hasattr(sys.modules[type(model).__module__], "GHForPreTraining")  # the encoder file only
assert not any(name == "gh_hf" or name.startswith("gh_hf.") for name in sys.modules), "gh_hf was imported"
try:
    import gh_hf.losses  # noqa: F401
    raise SystemExit("gh_hf is importable")
except Exception as error:  # ModuleNotFoundError, or the broken install's RuntimeError
    print("GH_HF:", type(error).__name__, error)
print("CLASSES:", type(model).__module__, type(processor).__module__)
"""


@pytest.mark.parametrize("unimportable", list(UNIMPORTABLE))
def test_remote_code_loads_the_folder_where_gh_hf_is_unimportable(encoder_dir, tmp_path, unimportable):
    image = Image.fromarray(np.arange(20 * 17 * 3, dtype=np.uint8).reshape(20, 17, 3))
    encoder = GHModel.from_pretrained(encoder_dir).eval()
    with torch.no_grad():
        expected = encoder(**image_processor_for(encoder.config)(image, return_tensors="pt")).pooler_output
    torch.save(expected, tmp_path / "expected.pt")
    script = tmp_path / "load_remote.py"
    script.write_text(textwrap.dedent(REMOTE_SCRIPT).replace("SETUP", UNIMPORTABLE[unimportable]))
    env = {
        **os.environ,
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-I", str(script), str(encoder_dir), str(tmp_path / "expected.pt")],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    refused = next(line for line in result.stdout.splitlines() if line.startswith("REFUSED:"))
    assert "contains custom code" in refused and "trust_remote_code=True" in refused
    classes = next(line for line in result.stdout.splitlines() if line.startswith("CLASSES:")).split()[1:]
    assert all(name.startswith("transformers_modules.") for name in classes)


def _imported_modules(tree: ast.Module) -> list[tuple[int, str]]:
    """(level, module) of every import statement; level > 0 for relative imports."""
    imports: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports.extend((0, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imports.append((node.level, node.module or ""))
    return imports


def test_shipped_code_is_self_contained(encoder_dir):
    allowed = {"numpy", "PIL", "timm", "torch", "transformers"} | set(sys.stdlib_module_names)
    for name in CODE_FILES:
        source = (encoder_dir / name).read_text()
        assert "gh_hf" not in source, name
        tree = ast.parse(source)
        assert not any(isinstance(node, ast.Try) for node in tree.body), f"{name}: try around imports"
        for level, module in _imported_modules(tree):
            if level:  # relative: one of the shipped files
                assert f"{module}.py" in CODE_FILES, (name, module)
            else:
                assert module.split(".")[0] in allowed, (name, module)


def test_import_gh_hf_loads_neither_publishing_nor_evaluation_code():
    probe = (
        "import sys, gh_hf; print(sorted(name for name in sys.modules if name.split('.')[0] in "
        "{'gh_hf', 'matplotlib', 'evaluate'}))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = set(ast.literal_eval(result.stdout.strip().splitlines()[-1]))
    assert "gh_hf.modeling_gh_pretraining" in loaded  # the probe sees gh_hf's modules
    unwanted = {
        "gh_hf.hub",
        "gh_hf.hub.card",
        "gh_hf.hub.publish",
        "gh_hf.evaluation",
        "matplotlib",
        "evaluate",
    }
    assert not loaded & unwanted
