"""PEBBLE-style preference learning around a Stable-Baselines3 off-policy agent (SAC, TD3; TQC with sb3-contrib):
state-entropy pre-training, feedback rounds from an SB3 callback, relabelling of SB3's replay buffer after each
reward update, the learned reward in the VecEnv (docs/library.md). Importing it imports stable_baselines3.
"""

from pref_brl.sb3.buffer import PreferenceReplayBuffer
from pref_brl.sb3.pebble import PEBBLE, PreferenceCallback, PreferenceVecEnv
from pref_brl.sb3.runner import SB3Trainer, make_sb3_model

__all__ = ["PEBBLE", "PreferenceCallback", "PreferenceReplayBuffer", "PreferenceVecEnv", "SB3Trainer",
           "make_sb3_model"]
