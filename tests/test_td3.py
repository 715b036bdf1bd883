"""TD3 / OA-TD3: learning on the Ledge toy task, checkpoint round trip, determinism, exact resume, buffers."""

from __future__ import annotations

import copy
import dataclasses
import gc
from pathlib import Path

import numpy as np
import pytest
import torch

from robustbench_rl.agents.base import MetricSum
from robustbench_rl.agents.buffers import ReplayBuffer, RolloutBuffer
from robustbench_rl.agents.oa_td3 import OATD3Config
from robustbench_rl.agents.registry import make_trainer
from robustbench_rl.agents.td3 import TD3Config, TD3Trainer
from robustbench_rl.attacks.pgd import pgd_minimize
from robustbench_rl.config import STATE_FORMAT, RunConfig, field_docs
from robustbench_rl.envs import ledge_reward
from robustbench_rl.policy import load_policy
from robustbench_rl.training import load_state, policy_metadata

CPU = torch.device("cpu")
LEDGE = "rbrl/Ledge-v0"
# Small and fast: one-step episodes, 64x64 nets, one update per step.
LEDGE_KW = {"hidden": [64, 64], "learning_starts": 500}
LEDGE_STEPS = 3000


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def ledge_action(trainer: TD3Trainer) -> float:
    with torch.no_grad():
        return float(trainer.actor(torch.zeros(1, 1))[0, 0])


def worst_case_return(a: float, eps: float) -> float:
    """Brute force over the perturbation box: Ledge has one step, so this is the exact worst case."""
    deltas = np.linspace(-eps, eps, 2001)
    return float(ledge_reward(np.clip(a + deltas, -1.0, 1.0)).min())


def train_ledge(config, seed: int = 0, steps: int = LEDGE_STEPS) -> TD3Trainer:
    trainer = make_trainer(config, LEDGE, seed, steps, CPU)
    trainer.advance(steps)
    return trainer


@pytest.fixture(scope="module")
def ledge_runs():
    torch.set_num_threads(1)
    td3 = ledge_action(train_ledge(TD3Config(**LEDGE_KW)))
    robust = ledge_action(train_ledge(OATD3Config(**LEDGE_KW, omega=0.0, eps_train=0.2)))
    mixed = ledge_action(train_ledge(OATD3Config(**LEDGE_KW, omega=0.5, eps_train=0.2)))
    return {"td3": td3, "robust": robust, "mixed": mixed}


@pytest.mark.slow
def test_td3_learns_to_stand_near_the_ledge(ledge_runs):
    assert ledge_runs["td3"] > 0.42, ledge_runs


@pytest.mark.slow
def test_oa_td3_robust_objective_keeps_its_distance(ledge_runs):
    # Under a worst-case push of 0.2 the robust optimum is 0.3.
    assert 0.2 <= ledge_runs["robust"] <= 0.38, ledge_runs


@pytest.mark.slow
def test_default_omega_lands_between_robust_and_nominal(ledge_runs):
    assert ledge_runs["robust"] + 0.02 < ledge_runs["mixed"] <= 0.5, ledge_runs


@pytest.mark.slow
def test_oa_td3_beats_td3_under_worst_case_push(ledge_runs):
    eps = 0.2
    assert worst_case_return(ledge_runs["robust"], eps) > worst_case_return(ledge_runs["td3"], eps) + 0.5, ledge_runs


def _loss_trace(config, env_id: str, steps: int, chunk: int, seed: int = 3) -> np.ndarray:
    """Every metric, averaged per `chunk` steps: (steps / chunk, n_metrics); NaN where none yet."""
    trainer = make_trainer(config, env_id, seed, steps, CPU)
    trace = []
    for until in range(chunk, steps + 1, chunk):
        trainer.advance(until)
        trace.append(list(trainer.pop_metrics().values()))
    trainer.close()
    return np.array(trace)


def test_same_seed_gives_identical_losses():
    """Every logged loss over the first 2,000 steps (1,900 updates) of TD3 on Pendulum is identical."""
    cfg = TD3Config(hidden=[32, 32], learning_starts=100, batch_size=64)
    a = _loss_trace(cfg, "Pendulum-v1", 2000, 100)
    np.testing.assert_array_equal(a, _loss_trace(cfg, "Pendulum-v1", 2000, 100))
    assert np.isfinite(a[1:]).all()
    other = _loss_trace(cfg, "Pendulum-v1", 300, 100, seed=4)  # another seed differs from the first update on
    assert not np.array_equal(other[1:], a[1:3])


def test_oa_td3_same_seed_gives_identical_losses():
    """OA-TD3's PGD starts come from the trainer's generator too (500 steps on Hopper)."""
    cfg = OATD3Config(hidden=[32, 32], learning_starts=100, batch_size=64, pgd_steps=3)
    a = _loss_trace(cfg, "Hopper-v5", 500, 50)
    np.testing.assert_array_equal(a, _loss_trace(cfg, "Hopper-v5", 500, 50))
    assert np.isfinite(a[2:]).all()


@pytest.mark.parametrize("config", [TD3Config(hidden=[16, 16], learning_starts=50, batch_size=32),
                                    OATD3Config(hidden=[16, 16], learning_starts=50, batch_size=32, pgd_steps=2),
                                    OATD3Config(hidden=[16, 16], learning_starts=50, batch_size=32, oa_every=3)],
                         ids=["td3", "oa-td3", "oa-td3-every-3"])
def test_resume_from_saved_state_continues_exactly(config, tmp_path):
    """On Ledge (every episode is one step from the same state) a restored trainer reproduces the
    uninterrupted run bit for bit: networks, optimisers, replay buffer and RNG are all restored."""
    ref = make_trainer(config, LEDGE, 0, 600, CPU)
    ref.advance(300)
    path = tmp_path / "state.pt"
    torch.save({"format": STATE_FORMAT, "trainer": ref.state_dict()}, path)
    rows = ref.replay.write_file(tmp_path / "replay.bin")
    ref.advance(600)
    restored = make_trainer(config, LEDGE, 0, 600, CPU)
    restored.load_state_dict(load_state(path, CPU)["trainer"])
    restored.replay.read_file(tmp_path / "replay.bin", rows)
    restored.advance(600)
    for (name, p), q in zip(ref.actor.state_dict().items(), restored.actor.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert torch.equal(ref.buffer.act[:600], restored.buffer.act[:600])


@pytest.mark.parametrize("algo_cls", [TD3Config, OATD3Config], ids=["td3", "oa-td3"])
def test_checkpoint_round_trip_acts_identically(algo_cls, tmp_path):
    from robustbench_rl.checkpoint import save_checkpoint, state_tensors

    cfg = algo_cls(hidden=[32, 32], learning_starts=100, batch_size=32)
    trainer = make_trainer(cfg, "Hopper-v5", 0, 300, CPU)
    trainer.advance(300)
    modules, networks, extra_t, extra_m = trainer.policy_state()
    run = RunConfig(algo="oa-td3" if algo_cls is OATD3Config else "td3", env="Hopper-v5", steps=300)
    path = save_checkpoint(tmp_path / "p.safetensors", {**state_tensors(modules), **extra_t},
                           policy_metadata(run, cfg, networks, extra_m, trainer.global_step))
    policy = load_policy(str(path))
    obs = torch.randn(64, 11)
    with torch.no_grad():
        assert torch.equal(policy.act(obs), trainer.actor(obs).clamp(-1, 1))
        act = torch.rand(64, 3) * 2 - 1
        assert torch.equal(policy.critics["q"](obs, act), trainer.critic.min_q(obs, act))
        if algo_cls is OATD3Config:
            assert torch.equal(policy.critics["q_adv"](obs, act), trainer.critic_adv.min_q(obs, act))
        else:
            assert "q_adv" not in policy.critics
    assert policy.meta["config"] == dataclasses.asdict(cfg)
    assert policy.meta["steps"] == 300 and policy.meta["algo"] == run.algo


def test_every_hyperparameter_is_documented():
    docs = field_docs(OATD3Config)
    assert {f.name for f in dataclasses.fields(OATD3Config)} <= set(docs)
    assert all(len(d) > 10 for d in docs.values())


@pytest.mark.parametrize("kw,match", [({"omega": 1.5}, "omega"), ({"eps_train": -0.1}, "eps"),
                                      ({"pgd_steps": 0}, "pgd-steps"), ({"batch_size": 0}, "batch-size"),
                                      ({"hidden": []}, "hidden"), ({"tau": 0.0}, "tau"), ({"oa_every": 0}, "oa-every"),
                                      ({"oa_batch_size": 257}, "oa-batch-size"), ({"oa_batch_size": -1}, "oa-batch-size")])
def test_invalid_hyperparameters_are_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        OATD3Config(**kw).validate()


def test_oa_every_k_updates_the_oa_critic_on_every_kth_batch_and_reuses_the_oa_gradient_between():
    cfg = OATD3Config(hidden=[16, 16], learning_starts=20, batch_size=16, oa_every=4)
    trainer = make_trainer(cfg, LEDGE, 0, 200, CPU)
    trainer.advance(20)
    n0 = trainer.n_updates
    changed, refreshed = [], []
    for _ in range(16):
        before = [p.clone() for p in trainer.critic_adv.parameters()]
        nominal_before = trainer.critic.q1[0].weight.clone()
        g_before = trainer.g_adv.clone()
        trainer.update()
        changed.append(any(not torch.equal(p, q) for p, q in zip(before, trainer.critic_adv.parameters(), strict=True)))
        refreshed.append(not torch.equal(trainer.g_adv, g_before))
        assert not torch.equal(nominal_before, trainer.critic.q1[0].weight)  # the nominal critic: every update
    assert changed == [(n0 + i) % 4 == 0 for i in range(16)]
    # The OA actor gradient is recomputed at the first actor step (every 2nd update) after an OA update.
    assert refreshed == [(n0 + i) % 4 == 1 for i in range(16)]
    every = make_trainer(OATD3Config(hidden=[16, 16], learning_starts=20, batch_size=16, oa_every=1), LEDGE, 0, 200, CPU)
    every.advance(20)
    fresh, actor_steps = [], []
    for _ in range(8):
        g_before = every.g_adv.clone()
        actor_steps.append((every.n_updates + 1) % every.config.policy_delay == 0)
        every.update()
        fresh.append(not torch.equal(every.g_adv, g_before))
    assert fresh == actor_steps and sum(fresh) == 4  # oa_every 1: a fresh OA gradient at every actor step


def test_oa_batch_size_trains_the_oa_critic_on_the_first_rows_only():
    """Two batches equal in their first 16 rows give the OA critic the same step; the nominal critic
    sees all 64 rows."""
    cfg = OATD3Config(hidden=[16, 16], learning_starts=0, batch_size=64, oa_batch_size=16)
    first = make_trainer(cfg, "Hopper-v5", 0, 100, CPU)
    first.advance(70)  # fills the buffer; updates run from step 1 on
    state = first.state_dict()
    batch = first.buffer.sample(64, torch.Generator().manual_seed(1))
    changed = batch._replace(rew=torch.cat([batch.rew[:16], batch.rew[16:] + 5.0]))
    trainers = []
    for b in (batch, changed):
        t = make_trainer(cfg, "Hopper-v5", 0, 100, CPU)
        t.load_state_dict(copy.deepcopy(state))  # Adam's load_state_dict keeps the given state tensors
        t.n_updates = 0  # an OA update and no actor step
        t.buffer.sample = lambda size, gen, b=b: b
        t.update()
        trainers.append(t)
    a, b = trainers
    assert all(torch.equal(p, q) for p, q in zip(a.critic_adv.parameters(), b.critic_adv.parameters(), strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a.critic.parameters(), b.critic.parameters(), strict=True))


def test_cuda_graphs_are_refused_on_the_cpu_with_a_clear_error():
    trainer = make_trainer(TD3Config(hidden=[16, 16]), LEDGE, 0, 100, CPU)
    with pytest.raises(ValueError, match="CUDA graphs need the update on a CUDA device"):
        trainer.use_cuda_graphs()


def test_metric_sum_records_instead_of_summing_while_a_graph_is_captured():
    metrics = MetricSum(("loss",))
    metrics.add("loss", torch.tensor(1.0))
    with metrics.recording() as recorded:
        metrics.add("loss", torch.tensor(5.0))
    assert [(name, float(v)) for name, v in recorded] == [("loss", 5.0)]
    metrics.add("loss", torch.tensor(3.0))
    assert metrics.pop() == {"loss": 2.0}


def test_omega_one_is_td3_actor_and_omega_zero_skips_the_nominal_gradient():
    nominal = make_trainer(OATD3Config(hidden=[16, 16], learning_starts=20, batch_size=16, omega=1.0), LEDGE, 0, 60, CPU)
    nominal.advance(60)
    m = nominal.pop_metrics()
    assert np.isnan(m["conflict_share"]) and np.isnan(m["actor_adv_loss"])  # no OA actor gradient at omega 1
    assert np.isfinite(m["critic_adv_loss"])  # ... but the OA critic is still learned
    mixed = make_trainer(OATD3Config(hidden=[16, 16], learning_starts=20, batch_size=16), LEDGE, 0, 60, CPU)
    mixed.advance(60)
    share = mixed.pop_metrics()["conflict_share"]
    assert 0.0 <= share <= 1.0


# ---- buffers ---------------------------------------------------------------------------------------

def test_replay_buffer_ring_and_state_round_trip():
    buf = ReplayBuffer(2, 1, capacity=5)
    for i in range(7):  # wraps: keeps transitions 2..6
        buf.add(np.full(2, i), np.full(1, i), float(i), np.full(2, i + 1), float(i % 2))
    assert len(buf) == 5
    assert sorted(buf.rew.tolist()) == [2.0, 3.0, 4.0, 5.0, 6.0]
    state = buf.state_dict()
    assert state["rew"].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0]  # oldest first
    bigger = ReplayBuffer(2, 1, capacity=10)
    bigger.load_state_dict(state)
    assert len(bigger) == 5 and bigger.pos == 5
    bigger.add(np.zeros(2), np.zeros(1), 7.0, np.zeros(2), 0.0)
    assert bigger.rew[:6].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    smaller = ReplayBuffer(2, 1, capacity=3)
    smaller.load_state_dict(state)
    assert smaller.rew.tolist() == [4.0, 5.0, 6.0]  # keeps the newest


def test_replay_buffer_file_round_trip_keeps_order_and_refuses_a_wrong_file(tmp_path):
    buf = ReplayBuffer(2, 1, capacity=5)
    for i in range(7):  # wraps: keeps transitions 2..6, the oldest at pos 2
        buf.add(np.full(2, i), np.full(1, -i), float(i), np.full(2, i + 1), float(i % 2))
    assert buf.write_file(tmp_path / "r.bin") == 5
    assert (tmp_path / "r.bin").stat().st_size == 5 * (2 + 1 + 1 + 2 + 1) * 4
    same = ReplayBuffer(2, 1, capacity=5)
    same.read_file(tmp_path / "r.bin", 5)
    assert same.rew.tolist() == [2.0, 3.0, 4.0, 5.0, 6.0] and same.pos == 0 and len(same) == 5
    assert same.next_obs[:, 0].tolist() == [3.0, 4.0, 5.0, 6.0, 7.0] and same.act[:, 0].tolist() == [-2, -3, -4, -5, -6]
    assert same.done.tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]
    smaller = ReplayBuffer(2, 1, capacity=3)
    smaller.read_file(tmp_path / "r.bin", 5)
    assert smaller.rew.tolist() == [4.0, 5.0, 6.0] and smaller.obs[:, 1].tolist() == [4.0, 5.0, 6.0]
    with pytest.raises(ValueError, match="expected"):
        ReplayBuffer(3, 1, capacity=5).read_file(tmp_path / "r.bin", 5)  # another env's obs size
    assert not list(tmp_path.glob(".*tmp"))  # the temp file was renamed, not left behind


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_replay_buffer_memory_does_not_grow_as_it_fills():
    # The buffer's pages are touched at construction (zero-filled, not torch.empty), so filling it
    # (training) adds no resident memory: a run's footprint is known from its first step.
    gc.collect()
    buf = ReplayBuffer(100, 10, capacity=200_000)  # 2 x 100 + 10 + 2 floats per row: ~170 MB
    gc.collect()
    before = rss_bytes()
    chunk = 20_000
    rows = np.ones((chunk, 100), dtype=np.float32)
    for _ in range(200_000 // chunk):
        buf.add(rows, np.ones((chunk, 10)), np.ones(chunk), rows, np.zeros(chunk))
    del rows
    gc.collect()
    assert len(buf) == 200_000
    assert rss_bytes() - before < 0.1 * 212 * 4 * 200_000  # with torch.empty this grows by ~170 MB


def test_replay_buffer_batched_add_and_sample():
    buf = ReplayBuffer(3, 2, capacity=8)
    buf.add(np.ones((4, 3)), np.zeros((4, 2)), np.arange(4.0), np.ones((4, 3)), np.zeros(4))
    assert len(buf) == 4
    batch = buf.sample(16, torch.Generator().manual_seed(0))
    assert batch.obs.shape == (16, 3) and batch.act.shape == (16, 2) and batch.rew.shape == (16,)
    assert set(batch.rew.tolist()) <= {0.0, 1.0, 2.0, 3.0}
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(3, 2, capacity=8).sample(4)


def test_rollout_buffer_fills_and_resets():
    buf = RolloutBuffer(num_steps=2, num_envs=3, obs_dim=4, act_dim=1)
    for _ in range(2):
        buf.add(torch.ones(3, 4), torch.zeros(3, 1), torch.zeros(3), np.ones(3), np.zeros(3), torch.zeros(3))
    assert buf.full and buf.rew.sum() == 6
    with pytest.raises(ValueError, match="full"):
        buf.add(torch.ones(3, 4), torch.zeros(3, 1), torch.zeros(3), np.ones(3), np.zeros(3), torch.zeros(3))
    buf.reset()
    assert not buf.full


@pytest.mark.parametrize("omega,oa_rows", [(1.0, 0), (0.0, 0), (0.0, 24)])
def test_actor_gradient_equals_end_to_end_autograd(omega, oa_rows):
    # The actor step must give exactly the deterministic policy gradient of -Q(s, mu(s)) (omega 1) or of
    # -Q_adv(s, clip(mu(s) + d*)) with the PGD perturbation d* held fixed (omega 0; the OA critic's
    # analytic action gradient pushed through the actor), over the first oa_batch_size rows when that
    # is set, and leave the critics without gradients.
    cfg = OATD3Config(hidden=[32, 32], learning_starts=0, batch_size=64, omega=omega, oa_batch_size=oa_rows)
    trainer = make_trainer(cfg, "Hopper-v5", 0, 500, CPU)
    obs = torch.randn(64, 11)
    params = list(trainer.actor.parameters())
    if oa_rows:
        obs_all, obs = obs, obs[:oa_rows]
    act = trainer.actor(obs)
    if omega == 1.0:
        loss = -trainer.critic.q1(torch.cat([obs, act], -1)).mean()
    else:
        state = trainer.gen.get_state()
        worst = pgd_minimize(trainer.critic_adv.action_objective(obs, ("q1",)), act.detach(), cfg.eps_train,
                             cfg.pgd_steps, restarts=cfg.pgd_restarts, generator=trainer.gen, start=cfg.pgd_start)
        trainer.gen.set_state(state)
        perturbed = (act + (worst - act.detach())).clamp(-1.0, 1.0)
        loss = -trainer.critic_adv.q1(torch.cat([obs, perturbed], -1)).mean()
    expected = torch.autograd.grad(loss, params)
    trainer.actor_step(obs_all if oa_rows else obs)
    for p, g in zip(params, expected, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in trainer.critic.parameters())
    assert all(p.grad is None for p in trainer.critic_adv.parameters())
