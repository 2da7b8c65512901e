"""metatrade.agents"""
