"""The authoring model: actor definitions, events, handler dispatch, effects, policies."""
