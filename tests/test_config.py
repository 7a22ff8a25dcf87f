import pytest

from fedproxy.config import RunConfig, help_keys, load_config
from fedproxy.errors import ConfigError


def test_defaults_validate_and_roundtrip_through_flower_run_config():
    cfg = RunConfig()
    flat = cfg.to_flat()
    assert all(isinstance(v, (bool, int, float, str)) for v in flat.values())
    assert RunConfig.from_flat(flat) == cfg


def test_overrides_parse_json_values():
    cfg = RunConfig().with_overrides(["fed.rounds=7", "fuse.scales=[1.0, 3.0]", "compress.method=uniform"])
    assert cfg.fed.rounds == 7 and cfg.fuse.scales == [1.0, 3.0] and cfg.compress.method == "uniform"


@pytest.mark.parametrize("override, message", [
    ("fed.rounds=0", "fed.rounds must be >= 1"),
    ("fed.nope=1", "unknown config key 'fed.nope'"),
    ("compress.keep_ratio=1.5", "keep_ratio must be in"),
    ("fed.lr=abc", "fed.lr must be a number"),
    ("fed.centralized_lr=0", "must be > 0"),
    ("fed.rounds", "must look like section.key=value"),
    ("fed.dp_noise=1.0", "needs fed.dp_clip > 0"),
    ("fed.secagg=true", "needs fed.aggregator fedavg or fedavgm"),
    ("fed.round_timeout=0", "fed.round_timeout must be > 0"),
    ("fed.lr_decay=0", "fed.lr_decay must be in \\(0, 1\\]"),
    ("fed.lr_decay=1.5", "fed.lr_decay must be in \\(0, 1\\]"),
    ("fed.aggregator=fedprox", "needs fed.prox_mu > 0"),
    ("fed.logit_adjust=-1", "fed.logit_adjust must be >= 0"),
    ("fed.wire_dtype=bfloat16", "fed.wire_dtype must be one of"),
    ("fed.label_softmax=labels", "fed.label_softmax must be one of"),
    ("fuse.scales=[]", "fuse.scales must be a non-empty list"),
    ("fuse.scales=[1.0, -2.0]", "fuse.scales must be a non-empty list of non-negative"),
    ("fuse.align_ridge=0", "fuse.align_ridge must be > 0"),
])
def test_bad_values_give_specific_errors(override, message, fault_log):
    with pytest.raises(ConfigError, match=message):
        RunConfig().with_overrides([override])
    fault_log.bad_input(f"config override {override}")


def test_secagg_rejects_lora_and_the_in_process_path(tiny_ctx):
    from fedproxy.federated import run_federation

    with pytest.raises(ConfigError, match="set fed.lora_r=0"):
        RunConfig().with_overrides(["fed.aggregator=fedavg", "fed.secagg=true", "fed.lora_r=4"])
    cfg = RunConfig().with_overrides(["fed.aggregator=fedavg", "fed.secagg=true"])
    with pytest.raises(ConfigError, match="needs Flower's engines"):
        run_federation(tiny_ctx.llm, {}, tiny_ctx.bench.train, tiny_ctx.encoder, cfg.fed, tiny_ctx.device, 0)


def test_pooled_diagnostic_refuses_a_flower_engine(fault_log):
    with pytest.raises(ConfigError, match="'proxy-centralized' trains on pooled data"):
        RunConfig().with_overrides(['methods=["proxy-centralized"]', "fed.engine=simulation"])
    fault_log.bad_input("proxy-centralized with fed.engine=simulation")


def test_malformed_toml_is_reported(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[fed\nrounds = 2")
    with pytest.raises(ConfigError, match="malformed"):
        load_config(str(bad))


def test_unknown_section_key_in_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[fed]\nround = 2\n")
    with pytest.raises(ConfigError, match="unknown config key.*fed.round"):
        load_config(str(f))


def test_missing_file_or_preset():
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config("no-such-config.toml")


def test_every_key_has_help():
    rows = help_keys()
    assert len(rows) > 30
    assert all(text for _, _, text in rows)


def test_plain_fed_config_drops_fedproxy_client_extras():
    fed = RunConfig().with_overrides(["fed.aggregator=fedprox", "fed.prox_mu=0.1", "fed.logit_adjust=1.0",
                                      "fed.keep_optimizer_state=true", "fed.label_softmax=classes"]).fed
    plain = fed.plain(local_steps=7)  # from a FedProx config too: the baselines' own recipe is FedAvg
    assert (plain.aggregator, plain.prox_mu, plain.logit_adjust, plain.local_steps) == ("fedavg", 0.0, 0.0, 7)
    assert not plain.keep_optimizer_state and fed.keep_optimizer_state
    assert (plain.label_softmax, fed.label_softmax) == ("vocab", "classes")
    assert (fed.aggregator, fed.prox_mu, fed.logit_adjust) == ("fedprox", 0.1, 1.0)
