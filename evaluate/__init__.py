"""nsa.evaluate"""
