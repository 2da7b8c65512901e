"""metatrade.evaluation"""
