"""Config: YAML + dotted overrides, validation with field paths, frozen after load."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from rayrlhf.config import ConfigError, apply_overrides, load, to_dict

BASE = ["model.policy=/m", "data.prompts=/p.jsonl", "reward.function=pkg.mod:fn"]


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "model: {policy: /m}\ndata: {prompts: /p}\nreward: {function: 'a:b'}\n"
        "rollout: {num_workers: 1, temperature: 0.7}\n"
    )
    cfg = load(path, ["rollout.num_workers=4", "ppo.kl_estimator=k3", "run.name=x"])
    assert cfg.rollout.num_workers == 4
    assert cfg.rollout.temperature == 0.7  # untouched YAML value kept
    assert cfg.online.kl_estimator == "k3"  # the old section name still sets it
    assert cfg.run.name == "x"


def test_bad_value_names_the_field_path():
    with pytest.raises(ConfigError) as err:
        load(None, [*BASE, "rollout.num_workers=0"])
    assert "rollout.num_workers" in str(err.value)
    assert "greater than or equal to 1" in str(err.value)


def test_unknown_key_and_bad_choice_fail():
    with pytest.raises(ConfigError, match=r"rollout\.num_wrokers"):
        load(None, [*BASE, "rollout.num_wrokers=2"])
    with pytest.raises(ConfigError, match=r"ppo\.kl_estimator"):
        load(None, [*BASE, "ppo.kl_estimator=k9"])


def test_cross_field_rules():
    with pytest.raises(
        ConfigError, match="exactly one of reward.model, reward.function or reward.url"
    ):
        load(None, [*BASE, "reward.model=/rm"])
    with pytest.raises(ConfigError, match="split evenly over learner.num_ranks"):
        load(
            None,
            [
                *BASE,
                "learner.num_ranks=3",
                "learner.micro_batch_size=1",
                "learner.minibatch_size=3",
            ],
        )
    with pytest.raises(ConfigError, match=r"learner: .*multiple of num_ranks × micro_batch_size"):
        load(None, [*BASE, "learner.num_ranks=3"])
    with pytest.raises(ConfigError, match="fp16 needs device cuda"):
        load(None, [*BASE, "learner.precision=fp16"])
    with pytest.raises(ConfigError, match="offload_params needs zero_stage 3"):
        load(None, [*BASE, "learner.offload_params=true"])


def test_missing_required_section():
    with pytest.raises(ConfigError, match=r"model: Field required"):
        load(None, ["data.prompts=/p", "reward.function=a:b"])


def test_frozen_after_load():
    cfg = load(None, BASE)
    with pytest.raises(pydantic.ValidationError):
        cfg.rollout.num_workers = 3


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides({}, ["rollout.num_workers"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"run": 3}, ["run.name=x"])


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load(tmp_path / "absent.yaml")


def test_a_config_includes_another_and_overrides_what_differs(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(
        "model: {policy: /m}\ndata: {prompts: /p.jsonl}\n"
        "reward: {function: 'rayrlhf.rewards.rules:target_word_frequency'}\n"
        "run: {name: base, num_steps: 8}\nrollout: {max_new_tokens: 12}\n"
    )
    variant = tmp_path / "sub" / "variant.yaml"
    variant.parent.mkdir()
    variant.write_text("include: ../base.yaml\nrun: {num_steps: 2}\n")
    config = load(variant, ["rollout.max_new_tokens=4"])
    assert (config.run.name, config.run.num_steps) == ("base", 2)  # merged key by key
    assert config.rollout.max_new_tokens == 4 and config.model.policy == "/m"
    loop = tmp_path / "loop.yaml"
    loop.write_text("include: loop.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load(loop)


SHIPPED = sorted((Path(__file__).parents[2] / "launch" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_config_validates(path):
    """The demo and cluster configs are read by no other test: a schema change that breaks one
    fails here, not in a user's first run."""
    config = load(path)
    if path.stem == "review_grpo":
        assert config.algorithm.name == "grpo"
    if path.stem in ("review_dpo", "review_ilql"):  # the offline third step's own section
        assert getattr(config, path.stem.removeprefix("review_")) is not None


def test_the_shipped_configs_are_all_there():
    assert {"review_pipeline", "review_grpo", "review_dpo", "review_ilql", "japanese_pipeline"} <= {
        p.stem for p in SHIPPED
    }


def test_the_online_section_keeps_its_old_name_ppo(tmp_path):
    """Config files written for the ``ppo`` section still load; ``online`` wins where both set
    a field (an override in the new name over a file in the old one)."""
    path = tmp_path / "old.yaml"
    path.write_text("ppo:\n  kl_coef: 0.2\n  clip_range: 0.1\n")
    cfg = load(path, [*BASE, "online.kl_coef=0.3"])
    assert (cfg.online.kl_coef, cfg.online.clip_range) == (0.3, 0.1)
    assert "ppo" not in to_dict(cfg)
    with pytest.raises(ConfigError, match="online.clip_range"):
        load(path, [*BASE, "ppo.clip_range=2"])


def test_how_forward_passes_are_laid_out_decides_no_result_but_sft_packing_does():
    from rayrlhf.config.results import decided_fields, fingerprint, is_execution

    for path in (
        "learner.packing",
        "learner.max_tokens_per_micro_batch",
        "sft.learner.fused_optimizer",
        "reference.packing",
        "reference.mode",
        "dpo.learner.peak_tflops",
    ):
        assert is_execution(path), path
    assert not is_execution("sft.packing")  # packs examples into fewer items: other steps
    assert not is_execution("learner.policy_lr")
    # A field a later version adds, unset by default, leaves a fingerprint as it was.
    tree = {"model": {"policy": "p"}, "learner": {"policy_lr": 1e-5}}
    with_unset = {"model": {"policy": "p", "lora": None}, "learner": {"policy_lr": 1e-5}}
    assert decided_fields(with_unset) == decided_fields(tree)
    assert fingerprint(with_unset) == fingerprint(tree)
    assert fingerprint({**tree, "model": {"policy": "p", "lora": {"rank": 8}}}) != fingerprint(tree)
