# The seed's option 1 ("Opción 1: Usar start_logging"), steps 1 and 2 as one script, with
# runstream in place of azureml.core and joblib in place of sklearn.externals.joblib.
# Run it where a runstream.json or RUNSTREAM_* variables say where the services are.
import os

from runstream import Experiment, Run, Workspace

ws = Workspace.from_config()

# load diabetes dataset, a well-known small dataset that comes with scikit-learn
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_squared_error
from sklearn.model_selection import train_test_split
import joblib

X, y = load_diabetes(return_X_y = True)
columns = ['age', 'gender', 'bmi', 'bp', 's1', 's2', 's3', 's4', 's5', 's6']
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size = 0.2, random_state = 0)
data = {
   "train":{"X": X_train, "y": y_train},
   "test":{"X": X_test, "y": y_test}
}

# Get an experiment object from Azure Machine Learning
experiment = Experiment(workspace=ws, name="train-within-notebook")

# Create a run object in the experiment
run =  experiment.start_logging()
# Log the algorithm parameter alpha to the run
run.log('alpha', 0.03)

# Create, fit, and test the scikit-learn Ridge regression model
regression_model = Ridge(alpha=0.03)
regression_model.fit(data['train']['X'], data['train']['y'])
preds = regression_model.predict(data['test']['X'])

# Output the Mean Squared Error to the notebook and to the run
print('Mean Squared Error is', mean_squared_error(data['test']['y'], preds))
run.log('mse', mean_squared_error(data['test']['y'], preds))

# Save the model to the outputs directory for capture
model_file_name = 'outputs/model.pkl'
os.makedirs('outputs', exist_ok=True)  # the seed's notebook has this folder already

joblib.dump(value = regression_model, filename = model_file_name)

# upload the model file explicitly into artifacts
run.upload_file(name = model_file_name, path_or_stream = model_file_name)

# Complete the run
run.complete()
print(run.id)
