"""metatrade.training"""
