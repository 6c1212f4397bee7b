"""Models: input embedding, encoders with a first-layer mask hook, decoders (DESIGN §4)."""
from .decoders import TransformerDecoder, UpsampleDecoder, reconstruction_loss
from .embeddings import InputEmbedding
from .encoders import Encoder, Encoding, PerceiverEncoder, TransformerEncoder, build_encoder

__all__ = ["Encoder", "Encoding", "InputEmbedding", "PerceiverEncoder", "TransformerDecoder",
           "TransformerEncoder", "UpsampleDecoder", "build_encoder", "reconstruction_loss"]
