DROP TABLE break_glass_sessions;
