"""Torch modules: backbone factory, projection heads, U-Net decoder, EMA teacher."""
