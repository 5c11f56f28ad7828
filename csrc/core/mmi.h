/* mminference C core: the public API in one include.
 *   mmi_status.h          status codes, mmi_error, mmi_strerror
 *   mmi_sparse_index.h    the sparse-index representation (shapes and semantics)
 *   mmi_attention.h       problem description, validation, CPU forward
 *   mmi_index_builders.h  A-shape, vertical-slash, grid and modality-permutation builders
 *   mmi_boundary_index.h  modality-boundary builder (Q-boundary / 2D-boundary, class permutation)
 *   mmi_estimate.h        last-query estimation of vertical and slash scores
 *   mmi_grid_detect.h     grid stride / phase detection and grid lift from column mass */
#ifndef MMI_H
#define MMI_H

#include "mmi_attention.h"
#include "mmi_boundary_index.h"
#include "mmi_estimate.h"
#include "mmi_grid_detect.h"
#include "mmi_index_builders.h"
#include "mmi_sparse_index.h"
#include "mmi_status.h"

#endif /* MMI_H */
