DROP TABLE notes;
DROP TABLE projects;
DROP TABLE plain_projects;
