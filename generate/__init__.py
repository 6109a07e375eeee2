"""nsa.generate"""
