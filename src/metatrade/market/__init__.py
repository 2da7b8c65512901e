"""metatrade.market"""
