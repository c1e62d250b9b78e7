"""Representation similarity: activation capture and CKA (linear/RBF; biased, unbiased, minibatch).

Public API::

    compare_models(model_a, model_b, (images, labels), layers_a, layers_b, batch_size=200)
        -> CKAComparison(within_a, within_b, across)        # streaming minibatch CKA
    cka(x, y, kernel="linear", estimator="biased") -> float  # full batch, two feature matrices
    cka_matrix(features, kernel=..., estimator=...) -> CKAResult
    capture_activations(model, data, layers) -> {layer: (N, d) tensor}

Papers: Kornblith et al. 2019 (CKA); Song et al. 2012 (unbiased HSIC); Nguyen, Raghu &
Kornblith 2021 (minibatch CKA); Cianfarani et al. 2022 (robust vs standard representations).
"""
from engine.similarity.cka import (  # noqa: F401
    CKAComparison,
    CKAResult,
    MinibatchCKA,
    cka,
    cka_matrix,
    compare_models,
    corresponding_depths,
    hsic_to_cka,
)
from engine.similarity.features import (  # noqa: F401
    POOLINGS,
    capture_activations,
    forward_features,
    to_features,
)
from engine.similarity.hsic import (  # noqa: F401
    HSIC_ESTIMATORS,
    hsic_biased_matrix,
    hsic_unbiased_matrix,
)
from engine.similarity.kernels import DEFAULT_SIGMA_FRACTION, KERNELS, gram_linear, gram_rbf  # noqa: F401
from engine.similarity.inputs import attack_transform, distortion_transform  # noqa: F401
