__all__ = ['ttypes', 'constants', 'Forsun']
