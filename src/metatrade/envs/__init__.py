"""metatrade.envs"""
