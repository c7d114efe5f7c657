"""Calculators that put a trained forcematch model inside other engines.

    from forcematch.calculators.ase import ForcematchCalculator   # ASE (Å, eV)
"""
