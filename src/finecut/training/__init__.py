"""Training: object bank -> augmentation -> click simulation -> losses -> trainer -> checkpoint + model card."""
