"""nsa.pipelines"""
