"""The memory planner against DeepSpeed's own estimators, the 20B verdict, and its JSON output.

Meta device only: shapes are counted without weights, so the whole file takes a few seconds.
"""

from __future__ import annotations

import json
import os

import pytest

from rayrlhf.planner import lora as lo
from rayrlhf.planner import main
from rayrlhf.planner import memory as m
from rayrlhf.planner.plan import Cluster, Workload, other_gpus, place, plan
from rayrlhf.planner.shapes import PRESETS, shape_of

# DeepSpeed picks its accelerator at first import; this machine has no GPU.
os.environ.setdefault("DS_ACCELERATOR", "cpu")
BUFFER = 1.5  # DeepSpeed's additional_buffer_factor default, applied to its CPU figures only


@pytest.fixture(scope="module")
def shapes():
    """Every preset's shape (the 20B one takes ~1 s on the meta device)."""
    return {name: shape_of(name) for name in PRESETS}


def _states(params, largest, n_ranks, stage, offload, sub_group=m.SUB_GROUP_SIZE):
    return m.model_state_bytes(params, largest, n_ranks, stage, offload, sub_group)


def _close(ours: float, theirs: float) -> bool:
    # int() truncation on either side: a few bytes on figures of up to hundreds of GB.
    return abs(ours - theirs) <= max(64, 1e-9 * abs(theirs))


@pytest.mark.parametrize("params", [134_515_008, 1_235_814_400, 6_738_415_616, 20_554_567_680])
@pytest.mark.parametrize("gpus", [1, 4, 8])
@pytest.mark.parametrize("cpu_offload", [False, True])
def test_zero2_model_states_match_deepspeed(params, gpus, cpu_offload):
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    ds_cpu, ds_gpu = estimate_zero2_model_states_mem_needs(
        params, gpus, 1, cpu_offload, additional_buffer_factor=BUFFER
    )
    offload = "optimizer" if cpu_offload else "none"
    s = _states(params, 0, gpus, 2, offload)
    # DeepSpeed: 2Ψ bf16 weights + 18Ψ/N = (2 bf16 grads + 12 K) of the paper + 4 fp32 grads.
    assert _close(s["weights16"] + s["grads16"] + s["optim"] + s["grad32"], ds_gpu)
    assert s["live"] == 0
    # CPU: the buffer factor times the larger of loading (each process holds the model in fp32,
    # no zero.Init at stage 2) and the offloaded optimizer states + fp32 gradients.
    load = m.load_cpu_bytes(params, 0, gpus, m.FP32, zero_init=False)
    off = m.offload_cpu_bytes(params, offload, gpus, gpus)
    assert _close(BUFFER * max(load, off), ds_cpu)


@pytest.mark.parametrize("preset", ["smollm2-135m", "llama-1b", "llama-7b", "gpt-neox-20b"])
@pytest.mark.parametrize(("nodes", "gpus"), [(1, 1), (1, 8), (2, 8), (4, 4)])
@pytest.mark.parametrize(
    ("cpu_offload", "cpu_offload_params"), [(False, False), (True, False), (True, True)]
)
@pytest.mark.parametrize("zero_init", [True, False])
def test_zero3_model_states_match_deepspeed(
    shapes, preset, nodes, gpus, cpu_offload, cpu_offload_params, zero_init
):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    shape = shapes[preset]
    p, ll, n = shape.params, shape.largest_layer, nodes * gpus
    ds_cpu, ds_gpu, ds_live = estimate_zero3_model_states_mem_needs(
        p, ll, gpus, nodes, cpu_offload, cpu_offload_params, zero_init, BUFFER
    )
    offload = {
        (False, False): "none",
        (True, False): "optimizer",
        (True, True): "optimizer+params",
    }[(cpu_offload, cpu_offload_params)]
    # A sub-group as large as the partition: DeepSpeed's estimate makes the fp32 grads at once.
    s = _states(p, ll, n, 3, offload, sub_group=p)
    assert s["live"] == ds_live == 4 * ll  # gathered bf16 weights + grads of the largest layer
    ours = s["live"] + s["weights16"] + s["grads16"] + s["optim"] + s["grad32"]
    if offload == "none":
        # DeepSpeed's stage-3 figure is live + 18Ψ/N: 2 bf16 weights + 16 (4 fp32 master + 8 Adam
        # + 4 fp32 grads); it leaves out the 2-byte bf16 gradient partition we count.
        assert s["grads16"] == m.BF16 * (p // n)
        ours -= s["grads16"]
    assert _close(ours, ds_gpu)
    # CPU: zero.Init loads one layer per process, without it the whole fp32 model; DeepSpeed
    # takes the larger of that and the offloaded states only without zero.Init.
    load = m.load_cpu_bytes(p, ll, gpus, m.FP32, zero_init)
    off = m.offload_cpu_bytes(p, offload, gpus, n)
    expected = off if (zero_init and offload != "none") else max(load, off)
    assert _close(BUFFER * expected, ds_cpu)


def test_paper_split_is_16_bytes_per_param():
    # Stage 0, no sharding: 2 + 2 + 12 of the ZeRO paper, plus DeepSpeed's fp32 gradients.
    s = _states(1000, 0, 1, 0, "none")
    assert (s["weights16"], s["grads16"], s["optim"], s["grad32"]) == (2000, 2000, 12000, 4000)
    z3 = _states(8000, 10, 8, 3, "none")
    assert z3["weights16"] + z3["grads16"] + z3["optim"] == 16 * 1000
    with pytest.raises(ValueError):
        _states(1000, 0, 1, 2, "optimizer+params")


def test_activation_and_kv_formulas_by_hand():
    s, b, h, a, layers, vocab = 8, 2, 16, 4, 3, 10
    layer = s * b * h * (34 + 5 * a * s / h)
    logits = s * b * vocab * 10
    assert m.activation_bytes(s, b, h, a, layers, vocab, False) == layers * layer + logits
    assert m.activation_bytes(s, b, h, a, layers, vocab, True) == (
        layers * 2 * s * b * h + layer + logits
    )
    assert m.kv_cache_bytes(layers, 2, 8, b, s) == 2 * layers * 2 * 8 * 2 * b * s


def test_20b_preset_has_about_20_5b_params(shapes):
    neox = shapes["gpt-neox-20b"]
    assert abs(neox.params - 20.5e9) / 20.5e9 < 0.01
    # The value model drops the untied LM head and adds a scalar head.
    assert neox.value_params == neox.params - neox.vocab * neox.hidden + neox.hidden + 1
    assert neox.largest_layer == neox.vocab * neox.hidden  # an embedding: ZeRO-3's live term
    assert abs(shapes["smollm2-135m"].params - 134.5e6) / 134.5e6 < 0.01  # tied, counted once


def test_local_folder_matches_preset(tmp_path, shapes):
    PRESETS["smollm2-135m"]().save_pretrained(tmp_path)
    local = shape_of(str(tmp_path))
    assert local.params == shapes["smollm2-135m"].params
    assert (local.kv_heads, local.head_dim) == (3, 64)


def _plan_20b(shapes, stages=(0, 1, 2, 3)):
    cluster = Cluster(nodes=1, gpus_per_node=8, gpu_mem_gib=80)
    placement = place(cluster, learner=4, rollout=2, reward_model=True)
    neox = shapes["gpt-neox-20b"]
    return cluster, plan(neox, neox, cluster, Workload(), placement, list(stages))


def test_20b_on_8x80_fits_only_with_zero3_offload(shapes):
    cluster, p = _plan_20b(shapes)
    assert p["others_fit"] and p["fitting"]
    row, ckpt = p["fitting"][0]
    assert (row.stage, row.offload) == (3, "optimizer")
    gpu, cpu = cluster.gpu_mem_gib * m.GIB, cluster.cpu_mem_gib * m.GIB
    assert row.fits(ckpt, gpu, cpu) and row.total[True] < row.total[False]
    # Honest: nothing without offload fits, and ZeRO-0 is far over.
    assert all(r.offload != "none" for r, _ in p["fitting"])
    zero0 = next(r for r in p["rows"] if r.stage == 0)
    assert not zero0.fits(True, gpu, cpu) and zero0.total[True] > 5 * gpu


def test_main_prints_verdict_and_json_parses(capsys, shapes):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "VERDICT: gpt-neox-20b" in out and "ZeRO-3 offload=optimizer" in out
    assert "ZeRO-0 offload=none +ckpt" in out and "DOES NOT FIT" in out
    assert main(["--model", "llama-1b", "--reward-model", "none", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"]["name"] == "llama-1b" and data["reward_model"] is None
    assert data["best"]["offload"] == "none"  # 1B needs no offload on 80 GiB
    assert {r["stage"] for r in data["learner"]} == {0, 1, 2, 3}


def test_main_rejects_bad_input(capsys):
    assert main(["--model", "no-such-model"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main(["--model", "smollm2-135m", "--learner-gpus", "8"]) == 2


def test_a_critic_free_algorithm_plans_no_value_model(capsys):
    def plan(*extra: str) -> dict:
        main(["--model", "gpt-neox-20b", "--zero-stage", "3", "--json", *extra])
        return json.loads(capsys.readouterr().out)

    ppo, grpo = plan(), plan("--algorithm", "grpo")
    assert grpo["reward_model"] == ppo["reward_model"]  # the reward model keeps its size
    p, g = ppo["learner"][0], grpo["learner"][0]
    assert grpo["model"]["value_params"] == 0 < ppo["model"]["value_params"]
    assert g["gib"]["optim"] < 0.55 * p["gib"]["optim"]  # the policy's Adam states alone
    assert g["gib"]["buffers"] == p["gib"]["buffers"] / 2  # one engine's buckets, not two
    assert g["total_gib"]["ckpt"] < p["total_gib"]["ckpt"] - 60


def test_vllm_rollout_gpus_hold_their_share_and_refuse_a_share_too_small():
    """vLLM reserves gpu_memory_utilization of the GPU up front (the rest of it beyond the
    weights is KV cache); tensor parallelism splits the weights; a share that cannot hold the
    weights and one batch does not fit, whatever the GPU's size."""
    from rayrlhf.planner.plan import gpu_fits, rollout_gpu

    shape, gib = shape_of("gpt-neox-20b"), m.GIB
    hf = rollout_gpu(shape, Workload(), 80 * gib)
    assert set(hf) == {"weights", "kv_cache", "transient"}
    big = rollout_gpu(shape, Workload(vllm_memory=0.9, tensor_parallel=2), 80 * gib)
    assert big["weights"] == hf["weights"] // 2
    assert big["total"] == int(0.9 * 80 * gib) + m.CONTEXT_BYTES and gpu_fits(big, 80 * gib)
    small = rollout_gpu(shape, Workload(vllm_memory=0.3), 80 * gib)
    assert small["short_of_vllm_share"] > 0 and not gpu_fits(small, 80 * gib)


# One- and two-GPU machines: the roles share a GPU through Ray's fractional num_gpus.
ONE_GPU = {"learner": 0.5, "rollout": 0.25, "reference": 0.125, "reward": 0.125}
TWO_GPUS = {"learner": 1.0, "rollout": 0.5, "reference": 0.25, "reward": 0.25}


@pytest.mark.parametrize(("gpus", "fractions"), [(1, ONE_GPU), (2, TWO_GPUS)])
def test_a_small_model_fits_one_or_two_gpus_with_fractional_num_gpus(capsys, gpus, fractions):
    argv = ["--model", "llama-1b", "--nodes", "1", "--gpus-per-node", str(gpus)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    settings = ", ".join(f"{role}.num_gpus: {frac:g}" for role, frac in fractions.items())
    verdict = out[out.index("VERDICT:") :]
    assert verdict.startswith("VERDICT: llama-1b (1.24B) trains with PPO") and settings in verdict
    # Exactly one GPU's worth per GPU: Ray packs the fractional roles onto their one GPU.
    assert sum(fractions.values()) == gpus
    shared_gpu = 0 if gpus == 1 else 1
    assert f"GPU {shared_gpu} shared by " in out and "FITS" in out
    assert main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["num_gpus"] == fractions and data["best"] is not None
    assert data["placement"]["colocated"] == [r for r in fractions if gpus == 1 or r != "learner"]
    assert data["shared_gpu"]["gpu"] == shared_gpu
    assert any(r["fits"]["ckpt"] for r in data["learner"])


def test_20b_on_one_24gb_gpu_does_not_fit_and_exits_1(capsys):
    argv = ["--model", "gpt-neox-20b", "--gpus-per-node", "1", "--gpu-mem-gb", "24"]
    assert main(argv) == 1  # no configuration fits: 1, not the bad-input 2
    out, err = capsys.readouterr()
    assert err == "" and "VERDICT: gpt-neox-20b does NOT fit on 1×1×24 GiB GPUs" in out
    assert "alone need" in out and "before the learner rank" in out
    assert main([*argv, "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["best"] is None and data["shared_gpu"]["free_gib"] < 0
    assert data["num_gpus"] == ONE_GPU


def test_colocated_memory_adds_up(shapes):
    """On one GPU the learner rank gets the GPU less every other role's total, each of which
    carries its own CUDA context and fragmentation; on two the learner has GPU 0 whole."""
    llama, gpu = shapes["llama-1b"], 80 * m.GIB
    one = Cluster(nodes=1, gpus_per_node=1, gpu_mem_gib=80)
    plc = place(one, learner=1, rollout=1, reward_model=True)
    assert plc.colocated == ("learner", "rollout", "reference", "reward")
    assert plc.roles_on_node0(one) == ["learner", "rollout", "reference", "reward"]
    p = plan(llama, llama, one, Workload(), plc, [0, 1, 2, 3])
    others = [p["others"][r] for r in ("rollout", "reference", "reward")]
    assert all(o["overhead"] >= m.CONTEXT_BYTES for o in others)  # one context per process
    assert p["learner_budget"] == gpu - sum(o["total"] for o in others)
    assert p["shared"]["used"] == sum(o["total"] for o in others)
    cpu = one.cpu_mem_gib * m.GIB
    row, ck = p["fitting"][0]
    assert max(row.total[ck], row.init_peak) <= p["learner_budget"]
    # Honest: ZeRO-0 without offload would fit a GPU of its own, not what the others leave.
    zero0 = next(r for r in p["rows"] if r.stage == 0)
    assert zero0.fits(False, gpu, cpu) and not zero0.fits(True, p["learner_budget"], cpu)
    assert all(r.stage != 0 for r, _ in p["fitting"])

    two = Cluster(nodes=1, gpus_per_node=2, gpu_mem_gib=80)
    plc2 = place(two, learner=1, rollout=1, reward_model=True)
    assert plc2.colocated == ("rollout", "reference", "reward") and not plc2.learner_shares
    p2 = plan(llama, llama, two, Workload(), plc2, [0, 1, 2, 3])
    assert p2["learner_budget"] == gpu and p2["shared"]["learner_budget"] is None
    assert p2["shared"]["free"] == gpu - sum(p2["others"][r]["total"] for r in plc2.colocated)
    assert (p2["fitting"][0][0].stage, p2["fitting"][0][0].offload) == (0, "none")
    # Two nodes of one GPU: node 0 holds the learner rank alone.
    plc3 = place(Cluster(nodes=2, gpus_per_node=1), learner=1, rollout=1, reward_model=False)
    assert plc3.roles_on_node0(Cluster(nodes=2, gpus_per_node=1)) == ["learner"]
    assert plc3.num_gpus() == {"learner": 1.0, "rollout": 0.5, "reference": 0.5}


def test_vllm_share_on_a_shared_gpu_must_leave_room_for_the_others(capsys):
    argv = ["--model", "llama-1b", "--gpus-per-node", "2", "--rollout-backend", "vllm"]
    assert main([*argv, "--vllm-memory", "0.9"]) == 1
    out = capsys.readouterr().out
    assert "gpu_memory_utilization 0.9 leaves the roles beside it on GPU 1 too little" in out
    most = out.split("to at most ")[1].split(" ")[0]
    assert main([*argv, "--vllm-memory", most, "--json"]) == 0  # the share it names fits
    data = json.loads(capsys.readouterr().out)
    assert data["shared_gpu"]["vllm"]["ok"] and data["shared_gpu"]["free_gib"] >= 0


def test_one_or_two_gpus_still_reject_impossible_input(capsys):
    two = ["--model", "smollm2-135m", "--gpus-per-node", "2"]
    assert main([*two, "--learner-gpus", "2"]) == 2  # two ranks leave no GPU for the rest
    assert main([*two, "--rollout-backend", "vllm", "--tensor-parallel", "2"]) == 2
    assert "whole GPUs" in capsys.readouterr().err
    assert main(["--model", "smollm2-135m", "--gpus-per-node", "0"]) == 2


# LoRA: a frozen bf16 base, trained adapters, adapters-only weight sync, reference in the learner.
def test_adapter_count_of_a_small_shape_by_hand_and_by_peft(tmp_path, shapes):
    """r·(d_in + d_out) per adapted layer, as peft counts it (all-linear leaves out the LM head;
    the value model adapts its backbone and trains its h + 1 head whole)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, AutoModelForCausalLM, LlamaConfig

    # q 64→64, k and v 64→32 (GQA), o 64→64, gate and up 64→96, down 96→64; two layers; r = 4.
    cfg = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=96, vocab_size=100)  # fmt: skip
    cfg.save_pretrained(tmp_path)
    shape = shape_of(str(tmp_path))
    hand = 2 * 4 * ((64 + 64) + 2 * (64 + 32) + (64 + 64) + 2 * (64 + 96) + (96 + 64))
    qv = 2 * 4 * ((64 + 64) + (64 + 32))
    lp = lo.lora_plan(shape, 4)
    assert (lp.policy.trainable, lp.value.trainable, lp.layers_adapted) == (7424, 7424 + 65, 14)
    assert hand == 7424 and lo.lora_plan(shape, 4, ("q_proj", "v_proj")).policy.trainable == qv
    for targets, want in (("all-linear", hand), (["q_proj", "v_proj"], qv)):
        for cls in (AutoModelForCausalLM, AutoModel):
            pm = get_peft_model(cls.from_config(cfg), LoraConfig(r=4, target_modules=targets))
            assert sum(p.numel() for p in pm.parameters() if p.requires_grad) == want
    assert lo.lora_plan(shapes["llama-7b"], 16).policy.trainable == 39_976_960  # peft's figure
    with pytest.raises(ValueError, match="name no linear layer"):
        lo.lora_plan(shape, 4, ("no_such_proj",))


def test_lora_states_and_activations_by_hand():
    """Frozen weights: bf16, no gradients or Adam, partitioned by ZeRO-3 only (which gathers a
    layer's weights, no gradient); adapters' states are full FT's; A's bf16 output is saved."""
    ad = lo.Adapters(trainable=1000, frozen=80_000, largest=10)
    z3 = lo.lora_state_bytes(ad, largest_layer=500, n_ranks=4, stage=3, offload="none")
    assert (z3["frozen16"], z3["weights16"], z3["grads16"]) == (2 * 20_000, 500, 500)
    assert (z3["optim"], z3["grad32"], z3["live"]) == (3000, 1000, 4 * 10 + 2 * 500)
    z2 = lo.lora_state_bytes(ad, 500, 4, 2, "none")
    assert (z2["frozen16"], z2["live"], z2["weights16"], z2["optim"]) == (160_000, 0, 2000, 3000)
    assert lo.lora_state_bytes(ad, 500, 4, 3, "optimizer+params")["frozen16"] == 0
    lp = lo.LoraPlan(8, "all-linear", ad, None, layers_adapted=6)
    assert lo.extra_activation_bytes(lp, 10, 2, 3, ckpt=False) == 10 * 2 * 2 * 8 * 6
    assert lo.extra_activation_bytes(lp, 10, 2, 3, ckpt=True) == 10 * 2 * 2 * 8 * 6 // 3


def test_20b_lora_fits_8x80_without_offload_and_syncs_adapters_only(shapes):
    neox, cluster, head = shapes["gpt-neox-20b"], Cluster(), shapes["gpt-neox-20b"].hidden + 1
    # r = 16 on each layer's query_key_value 6144→18432, dense, dense_h_to_4h and back.
    adapters = 44 * 16 * ((6144 + 18432) + (6144 + 6144) + 2 * (6144 + 24576))
    plc = place(cluster, learner=4, rollout=3, reward_model=True, reference=False)
    tune = lo.Tuning(lo.lora_plan(neox, 16), "learner")
    lora_p = plan(neox, neox, cluster, Workload(), plc, [0, 1, 2, 3], tune)
    row, ckpt = lora_p["fitting"][0]
    assert (row.stage, row.offload, ckpt) == (3, "none", False) and lora_p["others_fit"]
    assert row.states["frozen16"] == 2 * (neox.params // 4) + 2 * ((neox.value_params - head) // 4)
    assert row.states["optim"] == 12 * (adapters // 4 + (adapters + head) // 4)  # not 40.8B's
    # ZeRO-0/1/2 hold both 20B bases whole on every rank: none fits, even with checkpointing.
    whole = 2 * (neox.params + neox.value_params - head)
    assert all(r.states["frozen16"] == whole for r in lora_p["rows"] if r.stage < 3)
    assert {r.stage for r, _ in lora_p["fitting"]} == {3}
    # Full fine-tuning, same node and stage, no offload: ~4× the memory; it needs offload.
    _, full_p = _plan_20b(shapes, stages=[3])
    full_none = next(r for r in full_p["rows"] if r.offload == "none")
    assert full_none.total[False] > max(3.5 * row.total[False], 80 * m.GIB)
    assert full_p["fitting"][0][0].offload == "optimizer"
    assert full_p["fitting"][0][0].cpu_node > 4 * row.cpu_node  # 761 GiB against 162
    assert lo.sync_bytes(neox, tune) == {"sent": 2 * adapters, "full": 2 * neox.params}


def test_reference_in_the_learner_frees_the_reference_gpus(capsys, shapes):
    neox, cluster = shapes["gpt-neox-20b"], Cluster()
    with_ref, without = place(cluster, 4, 2, True), place(cluster, 4, 2, True, reference=False)
    assert (with_ref.reference, with_ref.reward, without.reference, without.reward) == (1, 1, 0, 2)
    assert "reference" in other_gpus(neox, neox, Workload(), with_ref)
    tune = lo.Tuning(lo.lora_plan(neox, 16), "learner")
    assert set(other_gpus(neox, neox, Workload(), without, tune=tune)) == {"rollout", "reward"}
    one = place(Cluster(gpus_per_node=1), 1, 1, reward_model=True, reference=False)
    assert one.colocated == ("learner", "rollout", "reward")
    assert main(["--reference", "learner"]) == 2  # only adapters can be switched off
    assert "needs LoRA" in capsys.readouterr().err


def test_plan_reads_the_20b_configs_full_and_lora(capsys):
    """``rayrlhf plan CONFIG``: LoRA fits 8 × 80 GiB without offload, full fine-tuning does not."""
    lora_cfg = os.path.join(os.path.dirname(__file__), "../../launch/configs/gpu_20b_lora.yaml")
    assert main([lora_cfg, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"]["name"] == "gpt-neox-20b" and data["tuning"]["lora"]["rank"] == 16
    plc = data["placement"]
    assert (plc["learner"], plc["rollout"], plc["reference"], plc["reward"]) == (4, 3, 0, 1)
    assert set(data["other_gpus"]) == {"rollout", "reward"}
    assert (data["best"]["stage"], data["best"]["offload"]) == (3, "none")
    assert data["verdict"][-1].endswith("FITS") and "ZeRO-3 offload=none" in data["verdict"][-1]
    assert data["tuning"]["sync_gib"] < 0.2 < 38 < data["tuning"]["full_weights_gib"]
    assert main([lora_cfg.replace("_lora", ""), "--json"]) == 0
    full = json.loads(capsys.readouterr().out)
    assert full["best"]["offload"] == "optimizer" and full["tuning"]["lora"] is None
    assert full["best"]["cpu_node_gib"] > 700 > 200 > data["best"]["cpu_node_gib"]
    # Four GPUs fit without offload (two learner ranks); on two, rollout and reward overflow GPU 1.
    four = ["--gpus-per-node", "4", "--learner-gpus", "2", "--rollout-gpus", "1", "--json"]
    assert main([lora_cfg, *four]) == 0
    assert json.loads(capsys.readouterr().out)["best"]["offload"] == "none"
    two = ["--gpus-per-node", "2", "--learner-gpus", "1", "--rollout-gpus", "1"]
    assert main([lora_cfg, *two]) == 1 and "need 123.9 GiB of GPU 1's 80" in capsys.readouterr().out
    # --set wins over the file: full fine-tuning with reference workers on gpu_20b.yaml's split.
    full_again = ["--set", "model.lora=null", "--set", "reference.mode=workers"]
    assert main([lora_cfg, *full_again, "--set", "rollout.num_workers=2"]) == 0
    out = capsys.readouterr().out
    assert "shape gpt-neox-20b (preset), named by model.policy" in out
    assert "Only fits with CPU offload" in out and "reference on 1, reward on 1" in out
