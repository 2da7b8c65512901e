"""metatrade.meta"""
