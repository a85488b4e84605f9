"""Money: prices and the cost model, billed cost, spend limits."""
