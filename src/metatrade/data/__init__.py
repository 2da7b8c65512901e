"""metatrade.data"""
