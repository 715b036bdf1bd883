"""GPU vs CPU (not run in CI): PGD throughput by batch, OA-TD3 / TD3 training speed, attacked evaluation.

Run on a machine with a CUDA GPU (the CPU columns are that machine's CPU, so the ratios compare like
with like). Four parts, each printed as a markdown table:

1. **parity**: the analytic critic objective and FGSM-started PGD (no randomness) on CUDA against CPU,
   on a Hopper-sized 256x256 twin critic: largest value / gradient differences, share of rows whose
   PGD answer is the same.
2. **PGD throughput** for batch 32..4096 (rows per second and ms per call), for the attack default
   (2 starts x 5 steps, FGSM + random), OA-TD3's default (2 starts x 2 steps) and the 20-step
   cold-start reference; CUDA timed with synchronisation, median of `--reps` calls after warm-up.
3. **training**: TD3 and OA-TD3 (every default) steps/s on Hopper-v5, one env step + one update each;
   on CUDA with the updates run eagerly and replayed as CUDA graphs (`rbrl train`'s default there).
4. **attacked evaluation** (with `--policy/--oa-policy`): env steps/s of nominal, min-q and min-oa-q
   (default PGD) by num_envs.

    python benchmarks/gpu_pgd.py --policy td3.safetensors --oa-policy oa-td3.safetensors --cpu-threads 1,16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from robustbench_rl.agents.oa_td3 import OATD3Config
from robustbench_rl.agents.registry import make_trainer
from robustbench_rl.agents.td3 import TD3Config
from robustbench_rl.attacks.pgd import pgd_minimize
from robustbench_rl.networks import TwinCritic

PGD_CONFIGS = {
    "attack default (2x5, fgsm)": {"steps": 5, "restarts": 2, "start": "fgsm"},
    "OA-TD3 default (2x2, fgsm)": {"steps": 2, "restarts": 2, "start": "fgsm"},
    "reference (1x20, random)": {"steps": 20, "restarts": 1, "start": "random"},
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hopper_critic(device: torch.device) -> TwinCritic:
    torch.manual_seed(0)
    return TwinCritic(11, 3, [256, 256]).requires_grad_(False).to(device)


def parity(batch: int, gpu: torch.device) -> dict:
    gen = torch.Generator().manual_seed(1)
    obs, a = torch.randn(batch, 11, generator=gen), torch.rand(batch, 3, generator=gen) * 2 - 1
    out = {}
    for key, dev in (("cpu", torch.device("cpu")), ("cuda", gpu)):
        critic = hopper_critic(dev)
        objective = critic.action_objective(obs.to(dev))
        v, g = objective.value_and_grad(a.to(dev))
        x, best = pgd_minimize(objective, a.to(dev), 0.1, 5, start="fgsm", return_value=True)
        out[key] = (v.cpu(), g.cpu(), x.cpu(), best.cpu())
    (v0, g0, x0, b0), (v1, g1, x1, b1) = out["cpu"], out["cuda"]
    same = (x1 - x0).abs().amax(1) < 1e-5
    return {"batch": batch, "max_abs_value_diff": float((v1 - v0).abs().max()),
            "max_rel_value_diff": float(((v1 - v0).abs() / v0.abs().clamp_min(1e-6)).max()),
            "max_abs_grad_diff": float((g1 - g0).abs().max()), "pgd_rows_same": float(same.float().mean()),
            "pgd_mean_min_cpu": float(b0.mean()), "pgd_mean_min_cuda": float(b1.mean())}


def pgd_time(device: torch.device, batch: int, cfg: dict, reps: int) -> float:
    """Median seconds per pgd_minimize call (critic objective built inside, as the attack does)."""
    critic = hopper_critic(device)
    obs = torch.randn(batch, 11, device=device)
    a = torch.rand(batch, 3, device=device) * 2 - 1
    gen = torch.Generator(device=device).manual_seed(0)

    def call():
        return pgd_minimize(critic.action_objective(obs), a, 0.1, cfg["steps"], restarts=cfg["restarts"],
                            start=cfg["start"], generator=gen)

    for _ in range(3):
        call()
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        call()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train_sps(config, device: torch.device, learning_starts: int, steps: int, graphs: bool = False) -> float:
    trainer = make_trainer(config, "Hopper-v5", 0, learning_starts + steps, device)
    if graphs:
        trainer.use_cuda_graphs()
    trainer.advance(learning_starts + 50)  # includes the first updates (CUDA/cuBLAS warm-up, graph captures)
    sync(device)
    t0 = time.perf_counter()
    trainer.advance(learning_starts + 50 + steps)
    trainer.pop_metrics()
    sync(device)
    dt = time.perf_counter() - t0
    trainer.close()
    return steps / dt


def eval_sps(spec: str, attack_name: str, device: str, num_envs: int, steps: int) -> float:
    from robustbench_rl.attacks.registry import make_policy_attack
    from robustbench_rl.policy import load_policy
    from robustbench_rl.rollout import evaluate

    policy = load_policy(spec, device=device)
    attack = "none" if attack_name == "none" else make_policy_attack(policy, attack_name, critic="own")[0]
    eps = 0.0 if attack_name == "none" else 0.1
    # One episode per env, cut at the length that gives `steps` env steps: a good policy's 1000-step
    # episodes would otherwise make the num_envs 64 cells 64,000 steps long.
    horizon = max(50, steps // num_envs)
    evaluate(policy, attack, eps, episodes=num_envs, seed=0, num_envs=num_envs, max_episode_steps=20)  # warm-up
    res = evaluate(policy, attack, eps, episodes=num_envs, seed=0, num_envs=num_envs, max_episode_steps=horizon)
    return res.steps_per_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="32,64,128,256,512,1024,2048,4096")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--cpu-reps", type=int, default=3)
    ap.add_argument("--cpu-threads", default="1", help="comma-separated torch thread counts for the CPU columns")
    ap.add_argument("--train-steps", type=int, default=500)
    ap.add_argument("--policy", default=None, help="checkpoint with its own q critic (min-q)")
    ap.add_argument("--oa-policy", default=None, help="checkpoint with its own q_adv critic (min-oa-q)")
    ap.add_argument("--num-envs", default="8,32,64")
    ap.add_argument("--eval-steps", type=int, default=2000)
    ap.add_argument("--parts", default="parity,pgd,train,eval", help="which parts to run")
    ap.add_argument("--json", default=None, help="also write every number here")
    ap.add_argument("--device", default="cuda",
                    help="the accelerated column's device (cpu only to smoke-test this script)")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_pgd.py needs a CUDA GPU (torch.cuda.is_available() is False)")
    gpu = torch.device(args.device)
    threads = [int(t) for t in args.cpu_threads.split(",")]
    name = torch.cuda.get_device_name(gpu) if gpu.type == "cuda" else "none (smoke test)"
    results: dict = {"gpu": name, "torch": torch.__version__, "cpu_cores": os.cpu_count(),
                     "machine": platform.machine(), "tf32": torch.backends.cuda.matmul.allow_tf32}
    print(f"# {results['gpu']}; torch {torch.__version__}; {os.cpu_count()} CPU cores; TF32 matmul "
          f"{'on' if results['tf32'] else 'off'}\n")

    parts = set(args.parts.split(","))
    if "parity" in parts:
        print_parity(results, gpu, threads)
    if "pgd" in parts:
        print_pgd(results, gpu, threads, args)
    if "train" in parts:
        print_train(results, gpu, threads, args)
    if "eval" in parts and args.policy:
        print_eval(results, gpu, threads, args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


def on_cpu(threads: list[int], measure) -> dict[str, float]:
    """measure(cpu device) at each torch thread count, as the table's CPU columns ("cpu<threads>")."""
    out = {}
    for t in threads:
        torch.set_num_threads(t)
        out[f"cpu{t}"] = measure(torch.device("cpu"))
    return out


def print_parity(results: dict, gpu: torch.device, threads: list[int]) -> None:
    torch.set_num_threads(max(threads))
    results["parity"] = [parity(b, gpu) for b in (256, 4096)]
    print("| batch | max abs Q diff | max rel Q diff | max abs dQ/da diff | PGD rows same | mean PGD min CPU | CUDA |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for p in results["parity"]:
        print(f"| {p['batch']} | {p['max_abs_value_diff']:.2e} | {p['max_rel_value_diff']:.2e} | "
              f"{p['max_abs_grad_diff']:.2e} | {100 * p['pgd_rows_same']:.2f}% | {p['pgd_mean_min_cpu']:.6f} | "
              f"{p['pgd_mean_min_cuda']:.6f} |")


def print_pgd(results: dict, gpu: torch.device, threads: list[int], args) -> None:
    """Seconds per PGD call ("cuda", "cpu<threads>") by batch, printed as rows/s (ms per call)."""
    results["pgd"] = []
    print("\nPGD on a 256x256 twin critic (Hopper: obs 11, act 3), eps 0.1; rows/s (ms per call)")
    cols = ["CUDA"] + [f"CPU {t} thr" for t in threads]
    for name, cfg in PGD_CONFIGS.items():
        print(f"\n{name}\n\n| batch | " + " | ".join(cols) + " | CUDA / best CPU |")
        print("| ---: |" + " ---: |" * (len(cols) + 1))
        for b in [int(x) for x in args.batches.split(",")]:
            row = {"config": name, "batch": b, "cuda": pgd_time(gpu, b, cfg, args.reps)}
            cpu = on_cpu(threads, lambda dev, b=b, cfg=cfg: pgd_time(dev, b, cfg, args.cpu_reps))
            row.update(cpu)
            results["pgd"].append(row)
            cells = [row["cuda"], *cpu.values()]
            print(f"| {b} | " + " | ".join(f"{b / s:,.0f} ({1e3 * s:.2f})" for s in cells)
                  + f" | {min(cpu.values()) / row['cuda']:.1f}x |", flush=True)


def print_train(results: dict, gpu: torch.device, threads: list[int], args) -> None:
    results["train"] = []
    print(f"\nTraining on Hopper-v5 ({args.train_steps} timed learning steps; steps/s)\n")
    print("| learner | CUDA, eager | CUDA, graphs | " + " | ".join(f"CPU {t} thr" for t in threads) + " |")
    print("| --- | ---: | ---: |" + " ---: |" * len(threads))
    for name, config in (("TD3", TD3Config(learning_starts=1000)), ("OA-TD3", OATD3Config(learning_starts=1000))):
        def measure(dev, config=config, graphs=False):
            return train_sps(config, dev, 1000, args.train_steps, graphs)

        # Graphs need CUDA: the --device cpu smoke test leaves that column empty.
        graphed = measure(gpu, graphs=True) if gpu.type == "cuda" else float("nan")
        row = {"learner": name, "cuda": measure(gpu), "cuda_graphs": graphed}
        cpu = on_cpu(threads, measure)
        row.update(cpu)
        results["train"].append(row)
        print(f"| {name} | {row['cuda']:.1f} | {row['cuda_graphs']:.1f} | " + " | ".join(f"{v:.1f}" for v in cpu.values())
              + " |", flush=True)


def print_eval(results: dict, gpu: torch.device, threads: list[int], args) -> None:
    results["eval"] = []
    targets = [("none", args.policy), ("min-q", args.policy)] + (
        [("min-oa-q", args.oa_policy)] if args.oa_policy else [])
    print("\nAttacked evaluation, Hopper-v5, eps 0.1, default PGD (env steps/s)\n")
    print("| num_envs | attack | CUDA | " + " | ".join(f"CPU {t} thr" for t in threads) + " |")
    print("| ---: | --- | ---: |" + " ---: |" * len(threads))
    for n in [int(x) for x in args.num_envs.split(",")]:
        for attack_name, spec in targets:
            def measure(dev, spec=spec, attack_name=attack_name, n=n):
                return eval_sps(spec, attack_name, str(dev), n, args.eval_steps)

            row = {"num_envs": n, "attack": attack_name, "cuda": measure(gpu)}
            cpu = on_cpu(threads, measure)
            row.update(cpu)
            results["eval"].append(row)
            print(f"| {n} | {attack_name} | {row['cuda']:,.0f} | " + " | ".join(f"{v:,.0f}" for v in cpu.values())
                  + " |", flush=True)


if __name__ == "__main__":
    main()
