"""Trainers (TD3 / OA-TD3, PPO / OA-PPO) and their shared pieces: networks, buffers, gradient surgery."""
