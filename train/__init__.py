"""nsa.train"""
