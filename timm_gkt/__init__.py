"""timm_gkt: General Knowledge Transfer between pretrained timm models (Roth, Thede et al., ICLR 2024)."""
__version__ = '0.1.0'
