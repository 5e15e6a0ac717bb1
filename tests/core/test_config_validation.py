"""The config rules checked at load: allowed values, numeric ranges, component `{type, params}`
nodes against the components' constructors, type switches, component defaults, run-level
checks and command-line values. Each error is one line naming the key path and where it was set."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from vlfw.config import load_config
from vlfw.errors import ConfigError, RegistryError
from vlfw.registry import CALLBACKS, DATASETS, HEADS, LOSSES, METRICS, MODELS, PROCESSORS


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- components registered for these tests ---------------------------------------------------------
def _base(registry, module: str, name: str) -> type:
    if registry.base is not None:
        return registry.base
    path = getattr(registry, "_base_path", (module, name))
    return getattr(importlib.import_module(path[0]), path[1])


def _make_components() -> dict:
    from vlfw.datasets.base import DatasetBuilder
    from vlfw.losses.base import Loss
    from vlfw.metrics.base import Metric
    from vlfw.models.base import BaseModel
    from vlfw.modules.heads import Head
    from vlfw.processors.base import Processor

    Callback = _base(CALLBACKS, "vlfw.runner.callbacks", "Callback")

    class CfgDataset(DatasetBuilder):
        DEFAULT_CONFIG = {
            "size": 4,
            "visual": "images",
            "features": {"format": "butd_tsv"},
            "processors": {"text": {"type": "cfg_tokenizer", "params": {"max_length": 16, "lowercase": True}}},
            "losses": [{"type": "cfg_loss", "params": {}}],
            "metrics": [{"type": "cfg_metric", "params": {}}],
        }
        CONFIG_CHOICES = {"visual": ("images", "regions"), "features.format": ("butd_tsv", "npy")}

    class CfgModel(BaseModel):
        DEFAULT_CONFIG = {"hidden_size": 8, "end_to_end": "auto"}
        CONFIG_CHOICES = {"end_to_end": ("auto", True, False)}

    class CfgLoss(Loss):
        def forward(self, batch, outputs):
            raise NotImplementedError

    class CfgSmoothed(Loss):
        def __init__(self, label_smoothing: float = 0.0) -> None:
            super().__init__()

    class CfgScaled(Loss):
        def __init__(self, scale: float = 1.0, **params) -> None:
            super().__init__()

    class CfgMargin(CfgScaled):
        def __init__(self, margin: float, **params) -> None:
            super().__init__(**params)

    class CfgMetric(Metric):
        def __init__(self, task_info=None, k: int = 1, **params) -> None:
            super().__init__(task_info=task_info, **params)

    class CfgPlainMetric(Metric):
        pass

    class CfgTokenizer(Processor):
        def __init__(self, max_length: int = 40, lowercase: bool = True, vocabulary=None, **params) -> None:
            super().__init__(max_length=max_length, lowercase=lowercase, **params)

    class CfgOtherTokenizer(Processor):
        def __init__(self, model_name: str = "x", **params) -> None:
            super().__init__(model_name=model_name, **params)

    class CfgHead(Head):
        def __init__(self, hidden_size, task_info, dropout: float = 0.1) -> None:
            super().__init__(hidden_size, task_info)

    class CfgCallback(Callback):
        def __init__(self, seconds: float = 0.0, **params) -> None:
            super().__init__(**params)

    class CfgBadDefaults(DatasetBuilder):
        DEFAULT_CONFIG = ["not", "a", "mapping"]

    class CfgYamlDefaults(DatasetBuilder):
        DEFAULT_CONFIG = "cfg_defaults_that_is_a_list.yaml"

    return {
        DATASETS: {"cfg_dataset": CfgDataset, "cfg_bad_defaults": CfgBadDefaults, "cfg_yaml_defaults": CfgYamlDefaults},
        MODELS: {"cfg_model": CfgModel},
        LOSSES: {"cfg_loss": CfgLoss, "cfg_smoothed": CfgSmoothed, "cfg_margin": CfgMargin},
        METRICS: {"cfg_metric": CfgMetric, "cfg_plain_metric": CfgPlainMetric},
        PROCESSORS: {"cfg_tokenizer": CfgTokenizer, "cfg_other_tokenizer": CfgOtherTokenizer},
        HEADS: {"cfg_head": CfgHead},
        CALLBACKS: {"cfg_callback": CfgCallback},
    }


@pytest.fixture(scope="module", autouse=True)
def components():
    made = _make_components()
    for registry, entries in made.items():
        for name, obj in entries.items():
            registry.add(name, obj)
    yield made
    for registry, entries in made.items():
        for name in entries:
            registry.remove(name)


def load(*args: str, **kwargs):
    return load_config(["model=cfg_model", "datasets=[cfg_dataset]", *args], **kwargs)


D = "dataset_config.cfg_dataset"
M = "model_config.cfg_model"


# -- 1. allowed values ------------------------------------------------------------------------------
@pytest.mark.parametrize("arg, expected", [
    ("training.precision=fp8", r"^training.precision must be one of fp32, bf16, fp16, got 'fp8' on the command line"),
    ("training.nan_policy=ignore", r"^training.nan_policy must be one of stop, skip"),
    ("evaluation.mode=maximum", r"^evaluation.mode must be one of max, min.*Did you mean: max"),
    ("distributed.strategy=deepspeed", r"^distributed.strategy must be one of ddp, fsdp"),
    ("distributed.backend=mpi", r"^distributed.backend must be one of auto, nccl, gloo"),
    ("multitask.mode=both", r"^multitask.mode must be one of one_per_update, all_per_update"),
    ("device=gpu", r"^device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    ("device=cuda:x", r"^device must be auto, cpu, cuda or cuda:N"),
    ("run_type=train_train", r"^run_type must be train, val and test joined by '_'"),
    ("run_type=training", r"^run_type must be"),
    (f"{D}.visual=boxes", rf"^{D}.visual must be one of images, regions, got 'boxes' on the command line"),
    (f"{D}.features.format=hdf5", rf"^{D}.features.format must be one of butd_tsv, npy"),
    (f"{M}.end_to_end=sometimes", rf"^{M}.end_to_end must be one of auto, True, False"),
])
def test_enum_values_are_checked_at_load(arg, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        load(arg)
    assert "\n" not in str(info.value)


def test_allowed_values_pass_and_may_mix_types():
    config = load("device=cuda:1", "run_type=val_test", "training.precision=bf16", "checkpoint.resume=auto",
                  f"{M}.end_to_end=true", f"{D}.visual=regions")
    assert config.device == "cuda:1" and config.checkpoint.resume == "auto"
    assert config.model_config.cfg_model.end_to_end is True


def test_enum_error_names_the_file_that_set_it(tmp_path):
    project = write(tmp_path / "run.yaml", "training:\n  precision: half\n")
    with pytest.raises(ConfigError, match=r"training.precision .* got 'half' in .*run.yaml"):
        load(f"config={project}")


def test_config_choices_must_name_a_default_key(components):
    builder = components[DATASETS]["cfg_dataset"]
    builder.CONFIG_CHOICES = {"visaul": ("images", "regions")}
    try:
        with pytest.raises(ConfigError, match=r"CONFIG_CHOICES of dataset 'cfg_dataset' .* names 'visaul'"):
            load()
    finally:
        builder.CONFIG_CHOICES = {"visual": ("images", "regions"), "features.format": ("butd_tsv", "npy")}


# -- 2. numbers -------------------------------------------------------------------------------------
@pytest.mark.parametrize("arg, expected", [
    ("training.batch_size=0", r"^training.batch_size must be an integer > 0, got 0 on the command line"),
    ("training.batch_size=-4", r"^training.batch_size must be an integer > 0"),
    ("optimizer.lr=0", r"^optimizer.lr must be a number > 0"),
    ("optimizer.lr=-1e-4", r"^optimizer.lr must be a number > 0"),
    ("training.max_updates=0", r"^training.max_updates must be an integer > 0 or null"),
    ("training.max_epochs=-1", r"^training.max_epochs must be an integer > 0 or null"),
    ("training.gradient_accumulation_steps=0", r"^training.gradient_accumulation_steps must be an integer > 0"),
    ("training.log_every=0", r"^training.log_every must be an integer > 0"),
    ("training.eval_every=-1", r"^training.eval_every must be an integer >= 0"),
    ("training.checkpoint_every=-5", r"^training.checkpoint_every must be an integer >= 0"),
    ("training.num_workers=-1", r"^training.num_workers must be an integer >= 0"),
    ("training.clip_grad_norm=-1.0", r"^training.clip_grad_norm must be a number >= 0 or null"),
    ("training.early_stopping.patience=0", r"^training.early_stopping.patience must be an integer > 0 or null"),
    ("checkpoint.keep_last=-1", r"^checkpoint.keep_last must be an integer >= 0"),
    ("scheduler.warmup_updates=-10", r"^scheduler.warmup_updates must be an integer >= 0"),
    ("scheduler.warmup_ratio=1.5", r"^scheduler.warmup_ratio must be a number >= 0 and <= 1"),
    ("multitask.temperature=0", r"^multitask.temperature must be a number > 0"),
    ("evaluation.batch_size=0", r"^evaluation.batch_size must be an integer > 0 or null"),
    ("evaluation.batch_size=abc", r"^evaluation.batch_size must be an integer > 0 or null, got 'abc'"),
    ("optimizer.betas=[0.9]", r"^optimizer.betas must hold 2 values"),
    ("optimizer.betas=[0.9,1.5]", r"^optimizer.betas\[1\] must be a number >= 0 and < 1"),
    ("multitask.batch_sizes.cfg_dataset=0", r"^multitask.batch_sizes.cfg_dataset must be an integer > 0"),
    ("multitask.loss_weights.cfg_dataset=-1", r"^multitask.loss_weights.cfg_dataset must be a number >= 0"),
    (f"{D}.loss_weights.cfg_loss=-2", rf"^{D}.loss_weights.cfg_loss must be a number >= 0"),
])
def test_impossible_numbers_are_rejected(arg, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        load(arg)
    assert "\n" not in str(info.value)


def test_boundary_numbers_pass():
    config = load("training.max_updates=null", "training.max_epochs=2", "training.clip_grad_norm=null",
                  "training.eval_every=0", "checkpoint.keep_last=0", "scheduler.warmup_ratio=1.0",
                  "evaluation.batch_size=16", f"{D}.loss_weights.cfg_loss=0")
    assert config.training.max_epochs == 2 and config.training.max_updates is None
    assert config.dataset_config.cfg_dataset.loss_weights.cfg_loss == 0


def test_training_needs_max_updates_or_max_epochs():
    with pytest.raises(ConfigError, match="max_updates and training.max_epochs are both null"):
        load("training.max_updates=null")
    assert load("training.max_updates=null", "run_type=val").training.max_updates is None


# -- 3. component params against the constructor ---------------------------------------------------------
def test_unknown_loss_param_names_path_component_and_close_match():
    with pytest.raises(ConfigError) as info:
        load(f"{D}.losses=[{{type: cfg_smoothed, params: {{label_smothing: 0.1}}}}]")
    message = str(info.value)
    assert message.startswith(f"unknown parameter {D}.losses[0].params.label_smothing on the command line")
    assert "loss 'cfg_smoothed' accepts label_smoothing" in message and "Did you mean: label_smoothing?" in message


def test_params_follow_the_mro_while_init_passes_params_up():
    config = load(f"{D}.losses=[{{type: cfg_margin, params: {{margin: 0.2, scale: 2.0}}}}]")
    assert config.dataset_config.cfg_dataset.losses[0].params.scale == 2.0
    with pytest.raises(ConfigError, match=r"loss 'cfg_margin' accepts margin, scale\.$"):
        load(f"{D}.losses=[{{type: cfg_margin, params: {{margin: 0.2, reduction: sum}}}}]")


def test_required_param_missing_is_an_error():
    with pytest.raises(ConfigError, match=rf"^{D}.losses\[0\] \(loss 'cfg_margin'\) needs {D}.losses\[0\].params.margin"):
        load(f"{D}.losses=[{{type: cfg_margin}}]")


def test_base_class_catch_all_and_injected_arguments_are_not_user_params():
    with pytest.raises(ConfigError, match=r"metrics\[0\].params.threshold .* metric 'cfg_plain_metric' accepts no parameters"):
        load(f"{D}.metrics=[{{type: cfg_plain_metric, params: {{threshold: 0.5}}}}]")
    with pytest.raises(ConfigError, match=r"metrics\[0\].params.task_info .* accepts k\."):
        load(f"{D}.metrics=[{{type: cfg_metric, params: {{task_info: 1}}}}]")
    assert load(f"{D}.metrics=[{{type: cfg_metric, params: {{k: 5}}}}]").dataset_config.cfg_dataset.metrics[0].params.k == 5


def test_processor_head_and_callback_params_are_checked():
    with pytest.raises(ConfigError, match=rf"^unknown parameter {D}.processors.text.params.max_lenght .*"
                                          r"processor 'cfg_tokenizer' accepts max_length, lowercase\. Did you mean: max_length"):
        load(f"{D}.processors.text.params.max_lenght=8")
    with pytest.raises(ConfigError, match=r"processors.text.params.vocabulary"):
        load(f"{D}.processors.text.params.vocabulary=[a,b]")
    with pytest.raises(ConfigError, match=rf"^unknown parameter {M}.heads.cfg_dataset.params.dropuot .*"
                                          r"head 'cfg_head' accepts dropout\. Did you mean: dropout"):
        load(f"{M}.heads.cfg_dataset={{type: cfg_head, params: {{dropuot: 0.2}}}}")
    with pytest.raises(ConfigError, match=r"heads.cfg_dataset.params.hidden_size"):
        load(f"{M}.heads.cfg_dataset={{type: cfg_head, params: {{hidden_size: 4}}}}")
    with pytest.raises(ConfigError, match=r"^unknown parameter training.callbacks\[1\].params.secs .* Did you mean: seconds"):
        load("training.callbacks=[cfg_callback, {type: cfg_callback, params: {secs: 1}}]")
    config = load("training.callbacks=[cfg_callback, {type: cfg_callback, params: {seconds: 1}}]",
                  f"{M}.heads.cfg_dataset={{type: cfg_head, params: {{dropout: 0.2}}}}")
    assert config.model_config.cfg_model.heads.cfg_dataset.params.dropout == 0.2


def test_unknown_type_is_the_registry_error_with_the_path():
    with pytest.raises(RegistryError, match=rf"^{D}.losses\[0\].type on the command line: unknown loss 'cfg_los'\."
                                            r" Did you mean: cfg_loss"):
        load(f"{D}.losses=[{{type: cfg_los}}]")
    with pytest.raises(RegistryError, match=r"^training.callbacks\[0\] on the command line: unknown callback"):
        load("training.callbacks=[cfg_calback]")
    with pytest.raises(RegistryError, match=r"^optimizer.type on the command line: unknown optimizer 'adamm'"):
        load("optimizer.type=adamm")


@pytest.mark.parametrize("value, expected", [
    ("[3]", rf"^{D}.losses\[0\] must be a loss \({{type, params}} mapping\), got 3 on the command line"),
    ("[{params: {}}]", rf"^{D}.losses\[0\] needs a `type` \(a loss name\) on the command line"),
    ("[{type: cfg_loss, weight: 2.0}]", rf"^unknown key {D}.losses\[0\].weight on the command line\. "
                                        rf"Loss weights are set in {D}.loss_weights"),
    ("[{type: cfg_loss, parms: {}}]", r"Did you mean: params"),
    ("[{type: cfg_smoothed, label_smoothing: 0.1}]", rf"^unknown key {D}.losses\[0\].label_smoothing on the command "
                                                    r"line\. Parameters go under params: "
                                                    rf"{D}.losses\[0\].params.label_smoothing\.$"),
    ("[{type: cfg_loss, params: 3}]", rf"^{D}.losses\[0\].params must be a mapping"),
])
def test_malformed_list_entries_are_one_line(value, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        load(f"{D}.losses={value}")
    assert "\n" not in str(info.value)


def test_a_processor_role_may_be_turned_off():
    config = load(f"{D}.processors.text=null")
    assert config.dataset_config.cfg_dataset.processors.text is None
    config = load(f"{D}.processors.text.type=null")  # a switch to null drops the params too
    assert OmegaConf.to_container(config.dataset_config.cfg_dataset.processors.text) == {"type": None, "params": {}}
    with pytest.raises(ConfigError, match=rf"^{D}.processors.text is off \(type: null\) but sets"):
        load(f"{D}.processors.text={{type: null, params: {{max_length: 3}}}}")
    with pytest.raises(ConfigError, match=rf"^{D}.losses\[0\] needs a `type`"):
        load(f"{D}.losses=[{{type: null}}]")  # losses, metrics and heads cannot be off: leave them out


def test_a_node_that_is_not_a_mapping_is_an_error():
    with pytest.raises(ConfigError, match=rf"^{M}.heads.cfg_dataset must be a head .*got 'cfg_head'"):
        load(f"{M}.heads.cfg_dataset=cfg_head")


def test_component_params_from_defaults_are_checked_and_named(components):
    builder = components[DATASETS]["cfg_dataset"]
    saved = builder.DEFAULT_CONFIG
    builder.DEFAULT_CONFIG = {**saved, "losses": [{"type": "cfg_smoothed", "params": {"smoothing": 0.1}}]}
    try:
        with pytest.raises(ConfigError, match=r"losses\[0\].params.smoothing in the default config of dataset 'cfg_dataset'"):
            load()
    finally:
        builder.DEFAULT_CONFIG = saved


@pytest.mark.parametrize("arg, expected", [
    (f"{D}.processors.text.params.max_length=[1,2]",
     rf"^{D}.processors.text.params.max_length must be an integer \(processor 'cfg_tokenizer' takes max_length: int\), "
     r"got \[1, 2\] on the command line$"),
    (f"{D}.processors.text.params.max_length=abc", rf"^{D}.processors.text.params.max_length must be an integer"),
    (f"{D}.processors.text.params.max_length=2.5", rf"^{D}.processors.text.params.max_length must be an integer"),
    (f"{D}.processors.text.params.lowercase=3", rf"^{D}.processors.text.params.lowercase must be a boolean"),
    (f"{D}.losses=[{{type: cfg_smoothed, params: {{label_smoothing: high}}}}]",
     rf"^{D}.losses\[0\].params.label_smoothing must be a number \(loss 'cfg_smoothed' takes label_smoothing: float\)"),
    (f"{D}.metrics=[{{type: cfg_metric, params: {{k: {{a: 1}}}}}}]", rf"^{D}.metrics\[0\].params.k must be an integer"),
    ("training.callbacks=[{type: cfg_callback, params: {seconds: [1]}}]",
     r"^training.callbacks\[0\].params.seconds must be a number"),
])
def test_param_values_of_the_wrong_type_are_rejected(arg, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        load(arg)
    assert "\n" not in str(info.value)


def test_param_values_of_the_annotated_types_pass():
    config = load(f"{D}.processors.text.params.max_length=16.0", f"{D}.processors.text.params.lowercase=false",
                  f"{D}.losses=[{{type: cfg_smoothed, params: {{label_smoothing: 0}}}}]",
                  "training.callbacks=[{type: cfg_callback, params: {seconds: 1}}]")
    assert config.dataset_config.cfg_dataset.processors.text.params.max_length == 16.0


@pytest.mark.parametrize("arg, expected", [
    ("training.batch_size=[1,2]",
     r"^training.batch_size must be an integer \(like 32\), got a list \[1, 2\] on the command line$"),
    ("training.deterministic=[true]", r"^training.deterministic must be a boolean \(like False\), got a list"),
    ("logging.jsonl={a: 1}", r"^logging.jsonl must be a boolean \(like True\), got a mapping \{'a': 1\}"),
    (f"{M}.hidden_size=[8,8]", rf"^{M}.hidden_size must be an integer \(like 8\), got a list"),
    (f"{D}.features.format=[npy]", rf"^{D}.features.format must be one of butd_tsv, npy"),  # a choice: its own error
])
def test_a_list_or_mapping_where_the_defaults_hold_a_scalar_is_rejected(arg, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        load(arg)
    assert "\n" not in str(info.value)


# -- 4. a type switch drops the lower params ---------------------------------------------------------------
def test_switching_a_processor_type_drops_the_default_params():
    config = load(f"{D}.processors.text.type=cfg_other_tokenizer", f"{D}.processors.text.params.model_name=bert")
    assert OmegaConf.to_container(config.dataset_config.cfg_dataset.processors.text) == {
        "type": "cfg_other_tokenizer", "params": {"model_name": "bert"}}
    # the same type (given again or not) keeps the lower layers' params
    config = load(f"{D}.processors.text.type=cfg_tokenizer", f"{D}.processors.text.params.max_length=8")
    assert OmegaConf.to_container(config.dataset_config.cfg_dataset.processors.text.params) == {
        "max_length": 8, "lowercase": True}


def test_type_switch_across_includes_and_files(tmp_path):
    write(tmp_path / "base.yaml", "dataset_config:\n  cfg_dataset:\n    processors:\n      text:\n"
                                  "        type: cfg_tokenizer\n        params: {max_length: 12}\n")
    project = write(tmp_path / "run.yaml", "includes: [base.yaml]\ndataset_config:\n  cfg_dataset:\n    processors:\n"
                                           "      text: {type: cfg_other_tokenizer}\n")
    config = load(f"config={project}")
    assert OmegaConf.to_container(config.dataset_config.cfg_dataset.processors.text) == {
        "type": "cfg_other_tokenizer", "params": {}}
    # the switched-to component's own parameters are checked, not the old one's
    with pytest.raises(ConfigError, match="processor 'cfg_other_tokenizer' accepts model_name"):
        load(f"config={project}", f"{D}.processors.text.params.max_length=3")


# -- 5. component defaults in one place --------------------------------------------------------------------
def test_component_config_merges_defaults_under_the_node(components):
    from vlfw.config import component_config

    builder = components[DATASETS]["cfg_dataset"]
    config = component_config(builder, {"size": 9, "processors": {"text": {"type": "cfg_other_tokenizer"}}})
    assert config.size == 9 and config.visual == "images"
    assert config.loss_weights == {} and len(config.losses) == 1  # the runner's keys are declared
    assert OmegaConf.to_container(config.processors.text) == {"type": "cfg_other_tokenizer", "params": {}}
    with pytest.raises(ConfigError, match=r"^dataset_config.vqa_like.visual must be one of images, regions, "
                                          r"got 'pixels' in the given config"):
        component_config(builder, {"visual": "pixels"}, path="dataset_config.vqa_like")


def test_runner_keys_exist_for_every_dataset_node():
    config = load(f"{D}.loss_weights.cfg_loss=0.5", f"{D}.loss_weights.mlm=2")
    assert config.dataset_config.cfg_dataset.loss_weights == {"cfg_loss": 0.5, "mlm": 2}


def test_default_config_that_is_not_a_mapping_names_the_component(tmp_path, components):
    from vlfw.config import component_config

    with pytest.raises(ConfigError, match=r"^the DEFAULT_CONFIG of dataset 'cfg_bad_defaults' from .* must be a "
                                          r"mapping or a YAML path relative to its module, not list"):
        load_config(["model=cfg_model", "datasets=[cfg_bad_defaults]"])
    yaml_builder = components[DATASETS]["cfg_yaml_defaults"]
    with pytest.raises(ConfigError, match=r"DEFAULT_CONFIG of dataset 'cfg_yaml_defaults' .*not found"):
        component_config(yaml_builder)  # a path relative to the test module that does not exist
    saved = yaml_builder.DEFAULT_CONFIG
    yaml_builder.DEFAULT_CONFIG = str(write(tmp_path / "defaults.yaml", "- a\n- b\n"))  # absolute: wins the join
    try:
        with pytest.raises(ConfigError, match=r"DEFAULT_CONFIG of dataset 'cfg_yaml_defaults' .*must hold a mapping"):
            component_config(yaml_builder)
    finally:
        yaml_builder.DEFAULT_CONFIG = saved


# -- 6. run-level checks --------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["multitask.loss_weights", "multitask.batch_sizes", "multitask.ratios"])
def test_per_dataset_mappings_must_name_datasets_of_the_run(key):
    with pytest.raises(ConfigError, match=rf"^{key}.cfg_datset on the command line names dataset 'cfg_datset', "
                                          r"which is not in datasets \(cfg_dataset\)\. Did you mean: cfg_dataset"):
        load(f"{key}.cfg_datset=2")


def test_heads_must_name_datasets_of_the_run():
    with pytest.raises(ConfigError, match=rf"^{M}.heads.other .*names dataset 'other'"):
        load(f"{M}.heads.other={{type: cfg_head}}")


def test_save_dir_that_is_a_file_is_an_error(tmp_path):
    target = write(tmp_path / "runs", "not a directory")
    with pytest.raises(ConfigError, match=rf"^save_dir {target} on the command line is an existing file"):
        load(f"save_dir={target}")


def test_a_dataset_listed_twice_is_an_error():
    with pytest.raises(ConfigError, match="datasets lists cfg_dataset more than once"):
        load_config(["model=cfg_model", "datasets=[cfg_dataset,cfg_dataset]"])


# -- 7. the command line --------------------------------------------------------------------------------------
def test_yaml_tag_on_the_command_line_is_refused_like_in_a_file(tmp_path):
    project = write(tmp_path / "evil.yaml", "seed: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError) as in_file:
        load_config([f"config={project}"])
    with pytest.raises(ConfigError) as on_cli:
        load_config(["seed=!!python/object/apply:os.system ['echo hacked']"])
    assert str(on_cli.value).startswith("malformed YAML in command-line argument ")
    assert "seed=!!python/object/apply:os.system" in str(on_cli.value)
    problem = "could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'"
    assert str(in_file.value).endswith(problem) and str(on_cli.value).endswith(problem)


@pytest.mark.parametrize("arg", ["datasets=[vqa2", "training.betas={a: 1", "save_dir='unclosed"])
def test_unbalanced_brackets_on_the_command_line_are_one_line(arg):
    with pytest.raises(ConfigError, match=r"^malformed YAML in command-line argument .*not closed\?\)$") as info:
        load_config([arg])
    assert "\n" not in str(info.value)
