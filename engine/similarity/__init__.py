"""Representation similarity: activation capture, CKA (linear/RBF; biased, unbiased, minibatch)
and the other measures (Procrustes, CCA, SVCCA, PWCCA, RSA, mutual kNN, linear regression).

Public API::

    compare_models(model_a, model_b, (images, labels), layers_a, layers_b, batch_size=200)
        -> CKAComparison(within_a, within_b, across)        # streaming minibatch CKA
    cka(x, y, kernel="linear", estimator="biased") -> float  # full batch, two feature matrices
    cka_matrix(features, kernel=..., estimator=...) -> CKAResult
    capture_activations(model, data, layers) -> {layer: (N, d) tensor}
    MEASURES[name](x, y, **options) -> float                # one measure, two feature matrices
    compare_with_measure(model_a, model_b, data, measure, ...) -> MeasureComparison

Papers: Kornblith et al. 2019 (CKA); Song et al. 2012 (unbiased HSIC); Nguyen, Raghu &
Kornblith 2021 (minibatch CKA); Cianfarani et al. 2022 (robust vs standard representations);
the measures' papers are in :mod:`engine.similarity.measures` and docs/SIMILARITY.md.
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
from engine.similarity.measures import (  # noqa: F401
    MAX_MEMORY_BYTES,
    MEASURES,
    Measure,
    MeasureComparison,
    SimilarityMap,
    compare_with_measure,
    get_measure,
    memory_bytes,
)
