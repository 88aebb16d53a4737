"""The rank side: what runs inside each torchrun rank of a cell (imports torch)."""
