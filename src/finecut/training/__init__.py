"""Training: object bank -> augmentation -> click simulation -> one loop (``trainer``) running a method's step
function (``focalclick``, ``ntclick``; chosen by ``[model].arch``) -> checkpoint + model card."""
