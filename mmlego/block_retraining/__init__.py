"""LegoDNN stage 3: retrain every descendant from one frozen teacher pass per batch."""
from .retraining import (FeatureCapture, RetrainingConfig, RetrainingError, RetrainingReport, descendant_key,
                         feature_loss, freeze_batch_norm, learning_rate, retrain_descendants)

__all__ = ['FeatureCapture', 'RetrainingConfig', 'RetrainingError', 'RetrainingReport', 'descendant_key',
           'feature_loss', 'freeze_batch_norm', 'learning_rate', 'retrain_descendants']
