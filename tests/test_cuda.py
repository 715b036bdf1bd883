"""CUDA: PGD, the analytic critic objective, OA-TD3 updates and attacked evaluation give CPU's results.

Skipped where torch sees no GPU (CI). torch's CPU and CUDA generators are different algorithms, so
a seed gives different random draws on each device; these tests compare the deterministic paths
(FGSM-started PGD, fixed batches, no target noise) and check that CUDA runs repeat themselves.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustbench_rl.agents.oa_td3 import OATD3Config, OATD3Trainer
from robustbench_rl.agents.registry import make_trainer
from robustbench_rl.agents.td3 import TD3Config, TD3Trainer
from robustbench_rl.attacks.base import check_bound
from robustbench_rl.attacks.pgd import pgd_minimize
from robustbench_rl.networks import TwinCritic

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CPU, GPU = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(autouse=True)
def full_precision_matmuls():
    # TF32 would make CUDA matmuls ~1e-3 off by design; the toolkit leaves torch's default (off) alone.
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = before


def hopper_critic(activation: str = "relu") -> TwinCritic:
    torch.manual_seed(0)
    return TwinCritic(11, 3, [256, 256], activation).requires_grad_(False)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_action_objective_value_and_gradient_match_cpu(activation):
    critic = hopper_critic(activation)
    gen = torch.Generator().manual_seed(1)
    obs, a = torch.randn(512, 11, generator=gen), torch.rand(512, 3, generator=gen) * 2 - 1
    v_cpu, g_cpu = critic.action_objective(obs).value_and_grad(a)
    critic.to(GPU)
    v_gpu, g_gpu = critic.action_objective(obs.to(GPU)).value_and_grad(a.to(GPU))
    torch.testing.assert_close(v_gpu.cpu(), v_cpu, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_gpu.cpu(), g_cpu, rtol=1e-4, atol=1e-5)


def test_fgsm_pgd_on_cuda_finds_the_cpu_minimum():
    """The attack's first PGD start (FGSM corner, 5 steps) has no randomness: same minima on both devices.
    A gradient coordinate within float error of zero can take the other sign on the other device and
    send that row elsewhere, so a handful of rows may differ; their values must not be worse."""
    critic = hopper_critic()
    gen = torch.Generator().manual_seed(2)
    obs, a = torch.randn(4096, 11, generator=gen), torch.rand(4096, 3, generator=gen) * 2 - 1
    x_cpu, v_cpu = pgd_minimize(critic.action_objective(obs), a, 0.1, 5, start="fgsm", return_value=True)
    critic.to(GPU)
    x_gpu, v_gpu = pgd_minimize(critic.action_objective(obs.to(GPU)), a.to(GPU), 0.1, 5, start="fgsm",
                                return_value=True)
    check_bound(a.to(GPU), x_gpu, 0.1)
    same = (x_gpu.cpu() - x_cpu).abs().amax(1) < 1e-5
    assert same.float().mean() > 0.99, f"only {same.float().mean():.3f} of rows agree"
    torch.testing.assert_close(v_gpu.cpu()[same], v_cpu[same], rtol=1e-5, atol=1e-5)
    assert abs(v_gpu.mean().item() - v_cpu.mean().item()) < 1e-3 * v_cpu.abs().mean().item()


def test_random_start_pgd_on_cuda_respects_the_bound_and_repeats_with_a_seed():
    critic = hopper_critic().to(GPU)
    obs, a = torch.randn(1024, 11, device=GPU), torch.rand(1024, 3, device=GPU) * 2 - 1
    runs = [pgd_minimize(critic.action_objective(obs), a, 0.2, 5, restarts=2, start="fgsm",
                         generator=torch.Generator(device=GPU).manual_seed(7)) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    check_bound(a, runs[0], 0.2)
    clean = critic.min_q(obs, a)
    assert (critic.min_q(obs, runs[0]) <= clean + 1e-5).all()


def _fixed_batch_trainer(device: torch.device, batches: list, **overrides) -> TD3Trainer:
    """OA-TD3 on Hopper whose updates see `batches` in order and draw nothing at random: no target
    policy noise, and PGD from its FGSM start only."""
    cfg = OATD3Config(hidden=[64, 64], learning_starts=0, batch_size=128, policy_noise=0.0,
                      pgd_steps=2, pgd_restarts=1, pgd_start="fgsm", omega=0.5, **overrides)
    trainer = make_trainer(cfg, "Hopper-v5", 0, 1000, device)  # same init on both: built on CPU, then moved
    feed = iter([type(b)(*(t.to(device) for t in b)) for b in batches])
    trainer.buffer.sample = lambda batch_size, generator=None: next(feed)
    return trainer


@pytest.mark.parametrize("overrides", [{}, {"oa_batch_size": 48, "oa_every": 2}], ids=["paper", "cheaper-oa"])
def test_oa_td3_updates_on_cuda_match_cpu(overrides):
    """Eight OA-TD3 updates (critics, OA target PGD, four omega-mixed actor steps with gradient
    surgery) from the same weights on the same batches: the same losses and parameters; also with the
    OA parts on a sub-batch every other update (the cached OA actor gradient)."""
    source = make_trainer(OATD3Config(hidden=[64, 64], learning_starts=1000), "Hopper-v5", 0, 1000, CPU)
    source.advance(400)  # random-action transitions, no updates
    gen = torch.Generator().manual_seed(3)
    batches = [source.buffer.sample(128, gen) for _ in range(8)]
    runs = {}
    for device in (CPU, GPU):
        trainer = _fixed_batch_trainer(device, batches, **overrides)
        for _ in batches:
            trainer.update()
        runs[device.type] = (trainer.pop_metrics(), {k: v.cpu() for k, v in trainer.actor.state_dict().items()},
                             {k: v.cpu() for k, v in trainer.critic_adv.state_dict().items()})
    (m_cpu, actor_cpu, adv_cpu), (m_gpu, actor_gpu, adv_gpu) = runs["cpu"], runs["cuda"]
    for name in ("critic_loss", "critic_adv_loss", "actor_loss", "actor_adv_loss", "q_adv_mean"):
        assert m_gpu[name] == pytest.approx(m_cpu[name], rel=1e-4, abs=1e-5), name
    for ref, got in ((actor_cpu, actor_gpu), (adv_cpu, adv_gpu)):
        for name, p in ref.items():
            # Adam's first steps move every weight by ~lr whatever the gradient's size, so a gradient
            # that is float noise on one device may step the other way: compare with lr-scale slack.
            torch.testing.assert_close(got[name], p, rtol=0, atol=2e-3, msg=name)
            assert (got[name] - p).abs().lt(1e-5).float().mean() > 0.99, name


@pytest.mark.parametrize("graphs", [False, True], ids=["eager", "cuda-graphs"])
def test_oa_td3_training_on_cuda_repeats_itself(graphs):
    losses = []
    for _ in range(2):
        trainer = make_trainer(OATD3Config(hidden=[32, 32], learning_starts=100, batch_size=64), "Hopper-v5", 5, 400,
                             GPU)
        if graphs:
            trainer.use_cuda_graphs()
        trainer.advance(400)
        losses.append(trainer.pop_metrics())
        trainer.close()
    assert losses[0] == losses[1]
    assert all(np.isfinite(v) for v in losses[0].values())


GRAPH_CASES = {
    "td3": TD3Config(hidden=[64, 64], learning_starts=100, batch_size=64),
    "oa-td3": OATD3Config(hidden=[64, 64], learning_starts=100, batch_size=64),
    "cheaper-oa": OATD3Config(hidden=[64, 64], learning_starts=100, batch_size=64, oa_every=3, oa_batch_size=48),
    "omega-0": OATD3Config(hidden=[64, 64], learning_starts=100, batch_size=64, omega=0.0),
}


@pytest.mark.parametrize("case", list(GRAPH_CASES))
def test_cuda_graph_updates_are_the_eager_updates(case):
    """Training with the updates replayed as CUDA graphs gives the eager CUDA run's numbers: the same
    kernels on the same inputs, and the same random draws (target noise, PGD starts) from the
    trainer's generator. 300 updates: every plan warms up, is captured and is replayed many times."""
    runs = {}
    for graphs in (False, True):
        trainer = make_trainer(GRAPH_CASES[case], "Hopper-v5", 3, 400, GPU)
        if graphs:
            assert trainer.use_cuda_graphs()
        trainer.advance(400)
        if graphs:  # every plan of the schedule was captured, and replays did most updates
            assert all(n == trainer.graphs.warmup + 1 for n in trainer.graphs.calls.values())
            assert len(trainer.graphs.captures) == len(trainer.graphs.calls) >= 2
        state = {k: v.detach().cpu() for k, v in trainer.actor.state_dict().items()}
        critic = trainer.critic_adv if isinstance(trainer, OATD3Trainer) else trainer.critic
        state |= {"critic." + k: v.detach().cpu() for k, v in critic.state_dict().items()}
        runs[graphs] = (trainer.pop_metrics(), state, trainer.gen.get_state())
        trainer.close()
    (m_eager, p_eager, gen_eager), (m_graph, p_graph, gen_graph) = runs[False], runs[True]
    assert torch.equal(gen_eager, gen_graph)  # the generator advanced alike
    for name, value in m_eager.items():
        assert m_graph[name] == pytest.approx(value, rel=1e-5, abs=1e-6, nan_ok=True), name
    for name, p in p_eager.items():
        torch.testing.assert_close(p_graph[name], p, rtol=1e-5, atol=1e-6, msg=name)


def test_attacked_evaluation_on_cuda_matches_cpu(tmp_path):
    """An OA-TD3 checkpoint loaded on either device, attacked by min-q / min-oa-q from the FGSM start:
    the same actions, so the same episode returns."""
    from robustbench_rl.attacks.registry import make_policy_attack
    from robustbench_rl.checkpoint import save_checkpoint, state_tensors
    from robustbench_rl.config import RunConfig
    from robustbench_rl.policy import load_policy
    from robustbench_rl.rollout import evaluate
    from robustbench_rl.training import policy_metadata

    cfg = OATD3Config(hidden=[64, 64], learning_starts=200, batch_size=64)
    trainer = make_trainer(cfg, "InvertedPendulum-v5", 0, 1200, CPU)
    trainer.advance(1200)
    modules, networks, extra_t, extra_m = trainer.policy_state()
    run = RunConfig(algo="oa-td3", env="InvertedPendulum-v5", steps=1200)
    path = save_checkpoint(tmp_path / "p.safetensors", {**state_tensors(modules), **extra_t},
                           policy_metadata(run, cfg, networks, extra_m, trainer.global_step))
    returns = {}
    for device in ("cpu", "cuda"):
        policy = load_policy(str(path), device=device)
        for name in ("min-q", "min-oa-q"):
            attack, _ = make_policy_attack(policy, name, critic="own", restarts=1, pgd_start="fgsm")
            result = evaluate(policy, attack, 0.2, episodes=6, seed=0, num_envs=3, max_episode_steps=300)
            returns[device, name] = result.returns
    for name in ("min-q", "min-oa-q"):
        np.testing.assert_allclose(returns["cuda", name], returns["cpu", name], rtol=1e-5)


TINY_TD3 = ["--hidden", "16,16", "--batch-size", "32", "--learning-starts", "50"]
TINY_PPO = ["--hidden", "16,16", "--num-steps", "64", "--num-minibatches", "4", "--update-epochs", "2"]
TINY_ARGS = {"td3": TINY_TD3, "oa-td3": [*TINY_TD3, "--pgd-steps", "2"], "ppo": TINY_PPO,
             "oa-ppo": [*TINY_PPO, "--critic-adv-hidden", "16,16", "--critic-adv-batch", "32",
                        "--critic-adv-updates", "4", "--pgd-steps", "2"]}


@pytest.mark.parametrize("algo", list(TINY_ARGS))
def test_train_resume_and_attack_on_cuda_through_the_cli(algo, tmp_path):
    """`rbrl train --device cuda`, a resume on CUDA (generator states are restored from CPU bytes), the
    policy loads on the CPU, and `rbrl attack --device cuda` runs the critic attacks and their checks."""
    from click.testing import CliRunner

    from robustbench_rl.cli import main
    from robustbench_rl.policy import load_policy

    def rbrl(*args: str):
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    out = tmp_path / algo
    res = rbrl("train", "--algo", algo, "--env", "Hopper-v5", "--steps", "128", "--out", str(out), "--device", "cuda",
               "--checkpoint-every", "64", "--eval-every", "128", "--eval-episodes", "2", *TINY_ARGS[algo])
    assert res.exit_code == 0, res.output
    res = rbrl("train", "--out", str(out), "--resume", "--steps", "256")
    assert res.exit_code == 0 and "resuming" in res.output, res.output
    policy = load_policy(str(out / "policy.safetensors"))
    assert policy.meta["steps"] == 256 and policy.device.type == "cpu"
    attacks = {"td3": "min-q", "oa-td3": "min-q,min-oa-q", "ppo": "biggest", "oa-ppo": "min-oa-q"}[algo]
    res = rbrl("attack", "--policy", str(out / "policy.safetensors"), "--device", "cuda", "--attack", attacks,
               "--critic", "own", "--eps", "0.1", "--episodes", "2", "--num-envs", "2")
    assert res.exit_code == 0, res.output
    assert attacks.split(",")[-1] in res.output
    if algo == "td3":  # a critic fitted on the GPU, saved, checked against Monte-Carlo returns
        res = rbrl("fit-critic", "--policy", str(out / "policy.safetensors"), "--device", "cuda", "--transitions", "2000",
                   "--steps", "200", "--check", "2", "--cache-dir", str(tmp_path / "cache"))
        assert res.exit_code == 0 and "check:" in res.output, res.output
